package config

import (
	"bytes"
	"crypto/ed25519"
	"encoding"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// Parse parses a configuration file's contents. name is used in messages
// only. Keys absent from data keep their Default values; empty data gives
// Default(). On any problem it returns a nil Config and an *Error listing
// all of them.
func Parse(name string, data []byte) (*Config, error) {
	c, _, err := parse(name, data)
	return c, err
}

// parse also returns the key path -> line map, which the tests use to
// check that the example file spells out every key.
func parse(name string, data []byte) (*Config, map[string]int, error) {
	d := &decoder{file: name, lines: map[string]int{}}
	c := base()

	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	switch err := dec.Decode(&doc); {
	case errors.Is(err, io.EOF):
		// Empty or comments only: all defaults.
	case err != nil:
		return nil, nil, &Error{Problems: []Problem{syntaxProblem(name, data, err)}}
	default:
		var extra yaml.Node
		switch err := dec.Decode(&extra); {
		case errors.Is(err, io.EOF):
		case err != nil:
			d.probs = append(d.probs, syntaxProblem(name, data, err))
		default:
			d.add(extra.Line, "", "a second YAML document; the config is one document (remove the \"---\" line)")
		}
		root := &doc
		if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
			root = root.Content[0]
		}
		d.value("", root, reflect.ValueOf(c).Elem())
	}

	c.resolve()
	c.normalizeLines()

	probs := d.probs
	for _, p := range c.problems() {
		// A value that failed to decode was left at its zero value;
		// Validate would only repeat the complaint less precisely.
		if d.failed(p.Key) {
			continue
		}
		p.File, p.Line = name, d.lineOf(p.Key)
		probs = append(probs, p)
	}
	if len(probs) > 0 {
		sortProblems(probs)
		return nil, d.lines, &Error{Problems: probs}
	}
	return c, d.lines, nil
}

var yamlLineRE = regexp.MustCompile(`^line (\d+): (.*)$`)

// parserProblems are the messages of yaml's parser (as opposed to its
// scanner). yaml.v3 reports their line 0-based, at the start of the
// enclosing construct, and leaves it out when it is 0.
var parserProblems = map[string]bool{
	"did not find expected <stream-start>":   true,
	"did not find expected <document start>": true,
	"found undefined tag handle":             true,
	"did not find expected node content":     true,
	"did not find expected '-' indicator":    true,
	"did not find expected key":              true,
	"did not find expected ',' or ']'":       true,
	"did not find expected ',' or '}'":       true,
	"found duplicate %YAML directive":        true,
	"found incompatible YAML document":       true,
	"found duplicate %TAG directive":         true,
}

var unknownAnchorRE = regexp.MustCompile(`^unknown anchor '(.*)' referenced$`)

// syntaxProblem turns a yaml.v3 error into a Problem with the best line
// that can be had: yaml.v3 numbers scanner errors from 1, parser errors
// from 0, and gives none for errors on the first line, for bad bytes and
// for unknown anchors.
func syntaxProblem(name string, data []byte, err error) Problem {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	}
	switch {
	case parserProblems[msg]:
		line++
	case line > 0:
	case strings.Contains(msg, "UTF-8") || strings.Contains(msg, "control characters") || strings.Contains(msg, "Unicode"):
		line = firstBadByteLine(data)
	case unknownAnchorRE.MatchString(msg):
		line = lineOfText(data, "*"+unknownAnchorRE.FindStringSubmatch(msg)[1])
	case strings.HasPrefix(msg, "input error"):
	default:
		line = 1 // scanner error with its mark on the first line
	}
	return Problem{File: name, Line: line, Msg: "YAML syntax: " + msg}
}

// firstBadByteLine finds the line of the first byte yaml's reader refuses:
// invalid UTF-8 or a character outside YAML's printable set.
func firstBadByteLine(data []byte) int {
	line := 1
	for len(data) > 0 {
		r, size := utf8.DecodeRune(data)
		printable := r == '\t' || r == '\n' || r == '\r' || (r >= 0x20 && r <= 0x7e) || r == 0x85 ||
			(r >= 0xa0 && r <= 0xd7ff) || (r >= 0xe000 && r <= 0xfffd) || (r >= 0x10000 && r <= 0x10ffff)
		if (r == utf8.RuneError && size <= 1) || !printable {
			return line
		}
		if r == '\n' {
			line++
		}
		data = data[size:]
	}
	return 0
}

func lineOfText(data []byte, text string) int {
	i := bytes.Index(data, []byte(text))
	if i < 0 {
		return 0
	}
	return 1 + bytes.Count(data[:i], []byte("\n"))
}

// decoder walks a yaml.Node tree against a Go value, recording where each
// key was and every problem, instead of stopping at the first.
type decoder struct {
	file  string
	lines map[string]int // key path -> line of the key (or list item)
	probs []Problem
	bad   map[string]bool // key paths that had a decode problem
}

func (d *decoder) add(line int, key, format string, args ...any) {
	d.probs = append(d.probs, Problem{File: d.file, Line: line, Key: key, Msg: fmt.Sprintf(format, args...)})
	if key == "" {
		// Problems with the file as a whole leave no field half-decoded.
		return
	}
	if d.bad == nil {
		d.bad = map[string]bool{}
	}
	d.bad[key] = true
}

// failed reports whether key or a key enclosing it had a decode problem.
func (d *decoder) failed(key string) bool {
	for k := key; ; k = parentKey(k) {
		if d.bad[k] {
			return true
		}
		if k == "" {
			return false
		}
	}
}

// lineOf finds the line of key, or of the nearest enclosing key present in
// the file, so that a problem about a missing key points at its section.
func (d *decoder) lineOf(key string) int {
	for k := key; k != ""; k = parentKey(k) {
		if l, ok := d.lines[k]; ok {
			return l
		}
	}
	return 0
}

var simpleKeyRE = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// childKey joins a mapping key onto a path. Keys that would make the path
// ambiguous (dots, spaces) are bracketed and quoted.
func childKey(parent, k string) string {
	if !simpleKeyRE.MatchString(k) {
		return parent + "[" + strconv.Quote(k) + "]"
	}
	if parent == "" {
		return k
	}
	return parent + "." + k
}

func indexKey(parent string, i int) string { return parent + "[" + strconv.Itoa(i) + "]" }

// parentKey undoes childKey and indexKey: it cuts at the last '.' or '['
// that is not inside a quoted key.
func parentKey(k string) string {
	inQuote, cut := false, 0
	for i := 0; i < len(k); i++ {
		switch c := k[i]; {
		case inQuote && c == '\\':
			i++
		case c == '"':
			inQuote = !inQuote
		case !inQuote && (c == '.' || c == '['):
			cut = i
		}
	}
	return k[:cut]
}

var (
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
	publicKeyType       = reflect.TypeFor[ed25519.PublicKey]()
)

func resolveAlias(n *yaml.Node) *yaml.Node {
	for i := 0; n.Kind == yaml.AliasNode && n.Alias != nil && i < 100; i++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" }

// value decodes n into v. A null leaves v as it is, which keeps the
// default for "key:" with no value.
func (d *decoder) value(path string, n *yaml.Node, v reflect.Value) {
	n = resolveAlias(n)
	if isNull(n) {
		return
	}
	d.element(path, n, v)
}

// element decodes n into v, where n is not a null that means "default".
func (d *decoder) element(path string, n *yaml.Node, v reflect.Value) {
	n = resolveAlias(n)
	t := v.Type()
	switch {
	case t == publicKeyType:
		if n.Kind != yaml.ScalarNode || isNull(n) {
			d.wrongType(path, n, "a base64 Ed25519 public key")
			return
		}
		k, err := decodeBase64(n.Value)
		if err != nil {
			d.add(d.at(path, n), path, "%v", err)
			return
		}
		v.SetBytes(k)
		return
	case reflect.PointerTo(t).Implements(textUnmarshalerType):
		if n.Kind != yaml.ScalarNode || isNull(n) {
			d.wrongType(path, n, "a string")
			return
		}
		if err := v.Addr().Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(n.Value)); err != nil {
			d.add(d.at(path, n), path, "%v", err)
		}
		return
	}

	switch t.Kind() {
	case reflect.Struct:
		d.mapping(path, n, func(key string, kn, vn *yaml.Node) bool {
			f, ok := fieldByTag(t, kn.Value)
			if !ok {
				return false
			}
			d.value(key, vn, v.FieldByIndex(f.Index))
			return true
		}, func() []string { return tagNames(t) })
	case reflect.Map:
		m := reflect.MakeMap(t)
		d.mapping(path, n, func(key string, kn, vn *yaml.Node) bool {
			e := reflect.New(t.Elem()).Elem()
			d.element(key, vn, e)
			m.SetMapIndex(reflect.ValueOf(kn.Value).Convert(t.Key()), e)
			return true
		}, nil)
		if n.Kind == yaml.MappingNode {
			v.Set(m)
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.wrongType(path, n, "a list")
			return
		}
		s := reflect.MakeSlice(t, len(n.Content), len(n.Content))
		for i, item := range n.Content {
			key := indexKey(path, i)
			d.lines[key] = item.Line
			d.element(key, item, s.Index(i))
		}
		v.Set(s)
	case reflect.String:
		if n.Kind != yaml.ScalarNode || isNull(n) {
			d.wrongType(path, n, "a string")
			return
		}
		// Any scalar is taken as written, so that default_country: 1
		// and unquoted +15551230001 work as a person would expect.
		v.SetString(n.Value)
	case reflect.Int, reflect.Int64:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
			d.wrongType(path, n, "an integer")
			return
		}
		var i int64
		if err := n.Decode(&i); err != nil || v.OverflowInt(i) {
			d.add(d.at(path, n), path, "integer %s is out of range", strings.Trim(quote(n.Value), `"`))
			return
		}
		v.SetInt(i)
	case reflect.Float64:
		if n.Kind != yaml.ScalarNode || (n.ShortTag() != "!!int" && n.ShortTag() != "!!float") {
			d.wrongType(path, n, "a number")
			return
		}
		var f float64
		if err := n.Decode(&f); err != nil {
			d.add(d.at(path, n), path, "bad number %s", quote(n.Value))
			return
		}
		v.SetFloat(f)
	default:
		// Only reachable if a field of an unsupported kind is added to
		// Config; fail loudly in tests rather than silently skip it.
		panic(fmt.Sprintf("config: no decoder for %s at %s", t, path))
	}
}

// mapping walks the pairs of a mapping node, checking keys and duplicates;
// set returns false for an unknown key.
func (d *decoder) mapping(path string, n *yaml.Node, set func(key string, kn, vn *yaml.Node) bool, known func() []string) {
	if n.Kind != yaml.MappingNode {
		d.wrongType(path, n, "a mapping")
		return
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn, vn := resolveAlias(n.Content[i]), n.Content[i+1]
		if kn.Kind != yaml.ScalarNode {
			d.add(kn.Line, path, "a key must be a plain string, not %s", describe(kn))
			continue
		}
		key := childKey(path, kn.Value)
		if kn.Value == "<<" && kn.ShortTag() == "!!merge" {
			d.add(kn.Line, key, "merge keys (<<) are not supported; write the keys out")
			continue
		}
		if first, dup := seen[kn.Value]; dup {
			d.add(kn.Line, key, "duplicate key (first set at line %d)", first)
			continue
		}
		seen[kn.Value] = kn.Line
		d.lines[key] = kn.Line
		if !set(key, kn, vn) {
			d.add(kn.Line, key, "unknown key%s", suggest(kn.Value, known()))
		}
	}
}

// at is the line to report for the value n at path: the line of its key,
// so that a value reached through an alias is reported where it is used
// rather than where the anchor is.
func (d *decoder) at(path string, n *yaml.Node) int {
	if l, ok := d.lines[path]; ok {
		return l
	}
	return n.Line
}

func (d *decoder) wrongType(path string, n *yaml.Node, want string) {
	d.add(d.at(path, n), path, "got %s, want %s", describe(n), want)
}

// describe names what the file holds at n, for "got X, want Y" messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!null":
			return "null"
		case "!!int":
			return "the integer " + strings.Trim(quote(n.Value), `"`)
		case "!!float":
			return "the number " + strings.Trim(quote(n.Value), `"`)
		case "!!bool":
			return "the boolean " + n.Value
		case "!!str":
			return "the string " + quote(n.Value)
		}
		return "a " + n.ShortTag() + " value"
	}
	return "an unexpected YAML node"
}

func fieldByTag(t reflect.Type, name string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		if tagName(f) == name {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

func tagName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	return name
}

func tagNames(t reflect.Type) []string {
	var names []string
	for i := range t.NumField() {
		if n := tagName(t.Field(i)); n != "" && n != "-" {
			names = append(names, n)
		}
	}
	return names
}

// suggest offers the nearest known key for a typo, or lists the keys.
// Short keys get a tighter threshold, or "foo" would suggest "log".
func suggest(got string, known []string) string {
	g := strings.ToLower(got)
	limit := 1
	if len(g) > 4 {
		limit = 2
	}
	best, bestD := "", limit+1
	for _, k := range known {
		// Unit suffixes are the part people forget ("cooldown" for
		// "cooldown_s").
		for _, cand := range []string{k, strings.TrimSuffix(k, "_s")} {
			if dist := editDistance(g, cand); dist < bestD {
				best, bestD = k, dist
			}
		}
	}
	if best != "" {
		return fmt.Sprintf(" (did you mean %q?)", best)
	}
	if len(known) == 0 {
		return ""
	}
	return " (want one of: " + strings.Join(known, ", ") + ")"
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// decodeBase64 accepts the standard and URL-safe alphabets, padded or
// not: keys are pasted from tools that differ on both.
func decodeBase64(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b, nil
		}
	}
	return nil, fmt.Errorf("%s is not base64 (want a standard or URL-safe base64 Ed25519 public key, 32 bytes)", quote(s))
}
