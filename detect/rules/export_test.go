package rules

// PanicIn makes the named rule panic on its next runs.
func PanicIn(e *Engine, rule string) {
	e.mu.Lock()
	e.panicIn = rule
	e.mu.Unlock()
}

// CoolEvidenceHeld says whether the line keeps the evidence of a pacing
// cool-down.
func CoolEvidenceHeld(e *Engine, line string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	ls := e.state[line]
	return ls != nil && ls.coolEvidence != nil
}
