package protocol

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Errors of CheckJSON and CheckCanonicalJSON, for errors.Is: the *JSONError
// they return wraps one of them.
var (
	// ErrSyntax is a document that is not one JSON value in UTF-8.
	ErrSyntax = errors.New("not valid JSON")
	// ErrBadNumber is a document that is JSON but for a number JSON does
	// not allow where a value goes: 01, 1., .5, +1, a lone -, 1e, NaN,
	// Infinity. Such an error is ErrSyntax too, for errors.Is.
	ErrBadNumber = errors.New("invalid number")
	// ErrDuplicateKey is an object with a key twice: what it means depends
	// on the reader (encoding/json takes the last, others the first), so a
	// signed event holding one would be read differently by its readers.
	ErrDuplicateKey = errors.New("duplicate key")
	// ErrTooDeep is arrays and objects nested deeper than allowed.
	ErrTooDeep = errors.New("nested too deep")
	// ErrNotCanonical is JSON that canonical JSON cannot represent: a
	// number with a fraction or an exponent, -0, an integer out of
	// [-(2**53)+1, (2**53)-1], a lone UTF-16 surrogate in a string, or a
	// key the signing library would write unescaped though it must not be.
	ErrNotCanonical = errors.New("not canonical JSON")
)

// JSONError says what is wrong with a JSON document and where.
type JSONError struct {
	// Kind is ErrSyntax, ErrBadNumber, ErrDuplicateKey, ErrTooDeep or
	// ErrNotCanonical.
	Kind error
	// Path leads from the top of the document to the faulty place, as
	// `users["@a:example.org"]` or `allow[0].type`; "" is the top.
	Path string
	// Msg says what is wrong, in words fit for a client.
	Msg string
}

func (e *JSONError) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return e.Path + ": " + e.Msg
}

func (e *JSONError) Unwrap() []error {
	if e.Kind == ErrBadNumber {
		return []error{ErrBadNumber, ErrSyntax}
	}
	return []error{e.Kind}
}

// maxSafeInteger is the largest integer of canonical JSON, 2**53 - 1.
const maxSafeInteger = 1<<53 - 1

// CheckJSON reports, as a *JSONError, whether doc is not exactly one JSON
// value (whitespace around it allowed) in UTF-8, holds an object with a key
// twice, or nests arrays and objects deeper than maxDepth. Keys are
// compared as decoded, so "a" and "\u0061" are the same key. It reads doc
// once, without recursion, so no input can exhaust the stack.
func CheckJSON(doc []byte, maxDepth int) error {
	s := scanner{data: doc, maxDepth: maxDepth}
	return s.run()
}

// CheckCanonicalJSON is CheckJSON plus the rules of canonical JSON that a
// signed document must meet before it is signed: integers only, within
// [-(2**53)+1, (2**53)-1], without fraction, exponent or minus zero;
// strings without lone UTF-16 surrogates; and, since gomatrixserverlib
// writes object keys without escaping them, keys free of quotes,
// backslashes and control characters.
func CheckCanonicalJSON(doc []byte, maxDepth int) error {
	s := scanner{data: doc, maxDepth: maxDepth, canonical: true}
	return s.run()
}

// faithfulDepth bounds the nesting CanonicalJSON takes: the library
// recurses, one level a call.
const faithfulDepth = 512

// checkFaithful refuses what gomatrixserverlib's canonical JSON would not
// encode faithfully: duplicate keys (both kept), keys that need escaping
// (written unescaped), lone surrogates (dropped, with what follows them),
// and numbers with a minus sign before a 0 other than -0 itself (the sign
// dropped: -0.5 becomes 0.5, 1e-05 becomes 1e05). Other numbers it keeps
// as written.
func checkFaithful(doc []byte) error {
	s := scanner{data: doc, maxDepth: faithfulDepth, faithful: true}
	return s.run()
}

// frame is an array or object being read.
type frame struct {
	object bool
	index  int    // array: the element being read
	key    []byte // object: the key of the member being read, if named
	named  bool
	keys   [][]byte            // decoded; parts of the document when unescaped
	set    map[string]struct{} // keys, once there are many
}

// manyKeys is the number of keys past which an object's keys go into a map
// rather than being compared one by one.
const manyKeys = 16

// scanner reads a JSON document once, iteratively.
type scanner struct {
	data      []byte
	pos       int
	maxDepth  int
	canonical bool
	faithful  bool // the subset of canonical's rules CanonicalJSON needs
	frames    []frame
	first     error // the first fault other than a syntax error
}

func (s *scanner) run() error {
	for {
		// A value starts here.
		s.skipSpace()
		if s.pos >= len(s.data) {
			return s.syntax("unexpected end of JSON")
		}
		switch c := s.data[s.pos]; {
		case c == '{' || c == '[':
			s.pos++
			if len(s.frames) >= s.maxDepth {
				return &JSONError{Kind: ErrTooDeep, Msg: fmt.Sprintf("arrays and objects are nested deeper than %d levels", s.maxDepth)}
			}
			s.push(c == '{')
			s.skipSpace()
			if s.pos < len(s.data) && (s.data[s.pos] == '}' && c == '{' || s.data[s.pos] == ']' && c == '[') {
				s.pos++
				s.frames = s.frames[:len(s.frames)-1]
				break
			}
			if c == '{' {
				if err := s.member(); err != nil {
					return err
				}
			}
			continue
		case c == '"':
			if _, err := s.str(false); err != nil {
				return err
			}
		case c == '-' || c >= '0' && c <= '9':
			if err := s.number(); err != nil {
				return err
			}
		case c == 't':
			if err := s.literal("true"); err != nil {
				return err
			}
		case c == 'f':
			if err := s.literal("false"); err != nil {
				return err
			}
		case c == 'n':
			if err := s.literal("null"); err != nil {
				return err
			}
		case c == 'N' || c == 'I' || c == '+' || c == '.':
			return s.badNumber(s.pos)
		default:
			return s.unexpected()
		}
		// A value ended: close the arrays and objects it ends, up to the
		// next value.
		for {
			s.skipSpace()
			if len(s.frames) == 0 {
				if s.pos < len(s.data) {
					return s.syntax(fmt.Sprintf("unexpected %s after the JSON value", s.describe()))
				}
				return s.first
			}
			if s.pos >= len(s.data) {
				return s.syntax("unexpected end of JSON")
			}
			top := &s.frames[len(s.frames)-1]
			c := s.data[s.pos]
			if c == ',' {
				s.pos++
				if top.object {
					s.skipSpace()
					if err := s.member(); err != nil {
						return err
					}
				} else {
					top.index++
				}
				break // to the next value
			}
			if top.object && c == '}' || !top.object && c == ']' {
				s.pos++
				s.frames = s.frames[:len(s.frames)-1]
				continue
			}
			return s.unexpected()
		}
	}
}

// push opens an array or an object, reusing the frame left at that depth.
func (s *scanner) push(object bool) {
	if len(s.frames) < cap(s.frames) {
		s.frames = s.frames[:len(s.frames)+1]
		f := &s.frames[len(s.frames)-1]
		f.object, f.index, f.key, f.named, f.keys = object, 0, nil, false, f.keys[:0]
		if f.set != nil {
			clear(f.set)
		}
		return
	}
	s.frames = append(s.frames, frame{object: object})
}

// member reads an object member's key and the colon after it, and checks
// the key against the object's others.
func (s *scanner) member() error {
	if s.pos >= len(s.data) {
		return s.syntax("unexpected end of JSON")
	}
	if s.data[s.pos] != '"' {
		return s.unexpected()
	}
	key, err := s.str(true)
	if err != nil {
		return err
	}
	top := &s.frames[len(s.frames)-1]
	top.key, top.named = nil, false
	if (s.canonical || s.faithful) && !plainString(key) {
		s.fault(ErrNotCanonical, fmt.Sprintf("key %q holds a quote, a backslash or a control character", key))
	}
	if top.has(key) {
		s.fault(ErrDuplicateKey, fmt.Sprintf("key %q appears twice", key))
	}
	top.key, top.named = key, true
	s.skipSpace()
	if s.pos >= len(s.data) {
		return s.syntax("unexpected end of JSON")
	}
	if s.data[s.pos] != ':' {
		return s.unexpected()
	}
	s.pos++
	return nil
}

// has reports whether the object has key already, and adds it.
func (f *frame) has(key []byte) bool {
	if f.set != nil && len(f.keys) > manyKeys {
		if _, ok := f.set[string(key)]; ok {
			return true
		}
		f.set[string(key)] = struct{}{}
		return false
	}
	for _, k := range f.keys {
		if bytes.Equal(k, key) {
			return true
		}
	}
	f.keys = append(f.keys, key)
	if len(f.keys) > manyKeys {
		if f.set == nil {
			f.set = make(map[string]struct{}, 2*len(f.keys))
		}
		for _, k := range f.keys {
			f.set[string(k)] = struct{}{}
		}
	}
	return false
}

// str reads a string starting at the quote under pos and, when decode is
// set, returns its decoded value: a part of the document when the string
// has no escape.
func (s *scanner) str(decode bool) ([]byte, error) {
	start := s.pos + 1
	i := start
	escaped := false
	for {
		// The common bytes, fast.
		for i < len(s.data) {
			c := s.data[i]
			if c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf {
				break
			}
			i++
		}
		if i >= len(s.data) {
			s.pos = i
			return nil, s.syntax("unexpected end of JSON in a string")
		}
		switch c := s.data[i]; {
		case c == '"':
			s.pos = i + 1
			if !decode {
				return nil, nil
			}
			if !escaped {
				return s.data[start:i:i], nil
			}
			return unescape(s.data[start:i]), nil
		case c < 0x20:
			s.pos = i
			return nil, s.syntax(fmt.Sprintf("control character 0x%02x in a string at byte %d", c, i))
		case c >= utf8.RuneSelf:
			r, n := utf8.DecodeRune(s.data[i:])
			if r == utf8.RuneError && n == 1 {
				s.pos = i
				return nil, s.syntax(fmt.Sprintf("invalid UTF-8 in a string at byte %d", i))
			}
			i += n
		default: // a backslash
			escaped = true
			if i+1 >= len(s.data) {
				s.pos = i + 1
				return nil, s.syntax("unexpected end of JSON in a string")
			}
			switch s.data[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				r, ok := hex4(s.data, i+2)
				if !ok {
					s.pos = i
					return nil, s.syntax(fmt.Sprintf("invalid \\u escape in a string at byte %d", i))
				}
				i += 6
				if !s.canonical && !s.faithful || r < 0xd800 || r > 0xdfff {
					break
				}
				if r <= 0xdbff && i+1 < len(s.data) && s.data[i] == '\\' && s.data[i+1] == 'u' {
					if r2, ok := hex4(s.data, i+2); ok && r2 >= 0xdc00 && r2 <= 0xdfff {
						i += 6
						break
					}
				}
				s.fault(ErrNotCanonical, fmt.Sprintf("a string holds a lone UTF-16 surrogate, \\u%04x", r))
			default:
				s.pos = i
				return nil, s.syntax(fmt.Sprintf("invalid escape \\%c in a string at byte %d", s.data[i+1], i))
			}
		}
	}
}

// hex4 reads the four hex digits at data[i:].
func hex4(data []byte, i int) (rune, bool) {
	if i+4 > len(data) {
		return 0, false
	}
	var r rune
	for _, c := range data[i : i+4] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return r, true
}

// unescape decodes the inside of a valid JSON string as encoding/json
// does: a lone surrogate becomes U+FFFD.
func unescape(raw []byte) []byte {
	var b bytes.Buffer
	b.Grow(len(raw))
	for i := 0; i < len(raw); {
		c := raw[i]
		if c != '\\' {
			b.WriteByte(c)
			i++
			continue
		}
		switch raw[i+1] {
		case 'b':
			b.WriteByte('\b')
		case 'f':
			b.WriteByte('\f')
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case 't':
			b.WriteByte('\t')
		case 'u':
			r, _ := hex4(raw, i+2)
			i += 6
			if r >= 0xd800 && r <= 0xdbff && i+1 < len(raw) && raw[i] == '\\' && raw[i+1] == 'u' {
				if r2, ok := hex4(raw, i+2); ok && r2 >= 0xdc00 && r2 <= 0xdfff {
					b.WriteRune(0x10000 + (r-0xd800)<<10 + (r2 - 0xdc00))
					i += 6
					continue
				}
			}
			if r >= 0xd800 && r <= 0xdfff {
				r = utf8.RuneError
			}
			b.WriteRune(r)
			continue
		default: // '"', '\\', '/'
			b.WriteByte(raw[i+1])
		}
		i += 2
	}
	return b.Bytes()
}

// number reads a number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (s *scanner) number() error {
	start := s.pos
	i := s.pos
	if s.data[i] == '-' {
		i++
	}
	switch {
	case i < len(s.data) && s.data[i] == '0':
		i++
		if i < len(s.data) && s.data[i] >= '0' && s.data[i] <= '9' {
			return s.badNumber(start)
		}
	case i < len(s.data) && s.data[i] >= '1' && s.data[i] <= '9':
		i = digits(s.data, i)
	default:
		return s.badNumber(start)
	}
	intEnd := i
	if i < len(s.data) && s.data[i] == '.' {
		i++
		if j := digits(s.data, i); j == i {
			return s.badNumber(start)
		} else {
			i = j
		}
	}
	if i < len(s.data) && (s.data[i] == 'e' || s.data[i] == 'E') {
		i++
		if i < len(s.data) && (s.data[i] == '+' || s.data[i] == '-') {
			i++
		}
		if j := digits(s.data, i); j == i {
			return s.badNumber(start)
		} else {
			i = j
		}
	}
	s.pos = i
	// The library drops every '-' before a '0', as if each were -0.
	if s.faithful && i-start > 2 && bytes.Contains(s.data[start:i], []byte("-0")) {
		s.fault(ErrNotCanonical, fmt.Sprintf("%s would lose a minus sign in canonical JSON", s.data[start:i]))
	}
	if !s.canonical {
		return nil
	}
	lit := string(s.data[start:i])
	if intEnd != i || lit == "-0" {
		s.fault(ErrNotCanonical, fmt.Sprintf("%s is not an integer: canonical JSON has only integers, without fraction or exponent", lit))
	} else if n, err := strconv.ParseInt(lit, 10, 64); err != nil || n > maxSafeInteger || n < -maxSafeInteger {
		s.fault(ErrNotCanonical, fmt.Sprintf("%s is out of the range of canonical JSON, -(2**53)+1 to (2**53)-1", lit))
	}
	return nil
}

// badNumber is the error of a number JSON does not allow, starting at
// start: the token up to the next delimiter is quoted (at most 32 bytes).
func (s *scanner) badNumber(start int) error {
	end := start
	for end < len(s.data) && end-start < 32 && !bytes.ContainsRune([]byte(",]} \t\n\r"), rune(s.data[end])) {
		end++
	}
	if end == len(s.data) && len(s.frames) > 0 {
		// Cut off mid-number: the body ends before the JSON does.
		return s.syntax("unexpected end of JSON")
	}
	tok := strings.ToValidUTF8(string(s.data[start:end]), "")
	return &JSONError{Kind: ErrBadNumber, Msg: fmt.Sprintf("%q at byte %d is not a number JSON allows", tok, start)}
}

// digits returns the index of the first byte at or after i that is not a
// decimal digit.
func digits(data []byte, i int) int {
	for i < len(data) && data[i] >= '0' && data[i] <= '9' {
		i++
	}
	return i
}

func (s *scanner) literal(word string) error {
	if len(s.data)-s.pos < len(word) || string(s.data[s.pos:s.pos+len(word)]) != word {
		return s.unexpected()
	}
	s.pos += len(word)
	return nil
}

func (s *scanner) skipSpace() {
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

// unexpected is a syntax error about the byte under pos.
func (s *scanner) unexpected() error {
	if s.pos >= len(s.data) {
		return s.syntax("unexpected end of JSON")
	}
	return s.syntax(fmt.Sprintf("unexpected %s at byte %d", s.describe(), s.pos))
}

// describe names the byte under pos.
func (s *scanner) describe() string {
	c := s.data[s.pos]
	if c >= 0x20 && c < 0x7f {
		return fmt.Sprintf("character %q", c)
	}
	return fmt.Sprintf("byte 0x%02x", c)
}

func (s *scanner) syntax(msg string) error {
	return &JSONError{Kind: ErrSyntax, Msg: msg}
}

// fault records an error of kind at the place being read, unless one was
// recorded before. Reading goes on: a syntax error further on wins, so
// that a document is reported as not JSON whenever it is not.
func (s *scanner) fault(kind error, msg string) {
	if s.first == nil {
		s.first = &JSONError{Kind: kind, Path: s.path(), Msg: msg}
	}
}

// path renders where the scanner is: keys that are plain words after a
// dot, others quoted in brackets, array indexes in brackets.
func (s *scanner) path() string {
	var b strings.Builder
	for _, f := range s.frames {
		switch {
		case !f.object:
			fmt.Fprintf(&b, "[%d]", f.index)
		case !f.named:
			// The key being read: the path ends at its object.
		case plainKey(f.key):
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.Write(f.key)
		default:
			b.WriteString("[" + strconv.Quote(string(f.key)) + "]")
		}
	}
	return b.String()
}

// plainString reports whether s, a decoded string, holds no quote,
// backslash or control character: none of the bytes JSON must escape.
func plainString(s []byte) bool {
	for _, c := range s {
		if c < 0x20 || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// plainKey reports whether key reads unambiguously after a dot.
func plainKey(key []byte) bool {
	if len(key) == 0 {
		return false
	}
	for _, c := range key {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}
