package rules

// PanicIn makes the named rule panic on its next runs.
func PanicIn(e *Engine, rule string) {
	e.mu.Lock()
	e.panicIn = rule
	e.mu.Unlock()
}
