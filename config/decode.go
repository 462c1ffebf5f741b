package config

import (
	"bytes"
	"encoding"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// The configuration is decoded from the yaml.Node tree by a small reflective
// decoder rather than by yaml's own: it knows each value's field path and
// line, so every error can name both, and it reports every problem rather
// than the first.

// decoder fills a value from a node tree, recording the line of each field
// and collecting errors.
type decoder struct {
	lines map[string]int
	// nulls holds the fields written with no value ("key:"), which count
	// as absent.
	nulls map[string]bool
	errs  Errors
}

// defaulter is implemented by sections whose defaults must be in place
// before their keys are decoded.
type defaulter interface{ setDefaults() }

func (s *S3) setDefaults() {
	s.Region = DefaultRegion
	s.TLS = true
}

// decodeDocument decodes data, one YAML document holding a mapping, into
// v, a pointer to a struct, with the decoder's strict rules; what names the
// document in messages ("configuration", "profile"). It returns the
// decoder, holding the problems found and the line of each field, and
// false if there is no document to validate further.
func decodeDocument(data []byte, what string, v any) (*decoder, bool) {
	d := &decoder{lines: make(map[string]int), nulls: make(map[string]bool)}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			d.errs = Errors{{Msg: "empty " + what}}
			return d, false
		}
		d.errs = Errors{syntaxError(err)}
		return d, false
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case errors.Is(err, io.EOF):
	case err != nil:
		d.errs = Errors{syntaxError(err)}
		return d, false
	default:
		d.errs = Errors{{Line: next.Line, Msg: "more than one YAML document; a " + what + " is one"}}
		return d, false
	}
	root := &doc
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		root = doc.Content[0]
	}
	if isNull(root) {
		d.errs = Errors{{Line: root.Line, Msg: "empty " + what}}
		return d, false
	}
	if root.Kind != yaml.MappingNode {
		d.errorf(root, "", "want a mapping, got %s", describe(root))
		return d, false
	}
	d.lines[""] = root.Line
	d.value(root, reflect.ValueOf(v).Elem(), "")
	return d, true
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// syntaxError turns a yaml parse error into an Error carrying its line.
func syntaxError(err error) *Error {
	msg := err.Error()
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &Error{Line: line, Msg: "invalid YAML: " + m[2]}
	}
	return &Error{Msg: "invalid YAML: " + strings.TrimPrefix(msg, "yaml: ")}
}

func (d *decoder) errorf(n *yaml.Node, field, format string, args ...any) {
	d.errs = append(d.errs, &Error{Line: n.Line, Field: field, Msg: fmt.Sprintf(format, args...)})
}

func isNull(n *yaml.Node) bool {
	return n.Kind == 0 || n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// describe names what a node holds, for "want X, got Y" errors.
func describe(n *yaml.Node) string {
	switch {
	case isNull(n):
		return "nothing"
	case n.Kind == yaml.MappingNode:
		return "a mapping"
	case n.Kind == yaml.SequenceNode:
		return "a list"
	case n.Kind == yaml.ScalarNode:
		return quote(n.Value)
	}
	return "something else"
}

func (d *decoder) value(n *yaml.Node, v reflect.Value, field string) {
	if n.Kind == yaml.AliasNode {
		// Aliases are refused outright: expanding them invites exponential
		// blow-up, and a configuration gains nothing from them.
		d.errorf(n, field, "YAML aliases are not accepted; write the value out")
		return
	}
	if u, ok := v.Addr().Interface().(encoding.TextUnmarshaler); ok {
		if n.Kind != yaml.ScalarNode {
			d.errorf(n, field, "want a value, got %s", describe(n))
			return
		}
		if err := u.UnmarshalText([]byte(n.Value)); err != nil {
			d.errorf(n, field, "bad value %s: %v", quote(n.Value), err)
		}
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		d.mapping(n, v, field)
	case reflect.Pointer:
		if v.IsNil() {
			p := reflect.New(v.Type().Elem())
			if s, ok := p.Interface().(defaulter); ok {
				s.setDefaults()
			}
			v.Set(p)
		}
		d.value(n, v.Elem(), field)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.errorf(n, field, "want a list, got %s", describe(n))
			return
		}
		for i, item := range n.Content {
			f := index(field, i)
			d.lines[f] = item.Line
			elem := reflect.New(v.Type().Elem()).Elem()
			if s, ok := elem.Addr().Interface().(defaulter); ok {
				s.setDefaults()
			}
			d.value(item, elem, f)
			v.Set(reflect.Append(v, elem))
		}
	case reflect.Map:
		d.stringMap(n, v, field)
	case reflect.String:
		if n.Kind != yaml.ScalarNode || isNull(n) {
			d.errorf(n, field, "want a string, got %s", describe(n))
			return
		}
		v.SetString(n.Value)
	case reflect.Bool:
		var b bool
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" || n.Decode(&b) != nil {
			d.errorf(n, field, "want true or false, got %s", describe(n))
			return
		}
		v.SetBool(b)
	case reflect.Int:
		var i int
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" || n.Decode(&i) != nil {
			d.errorf(n, field, "want a whole number, got %s", describe(n))
			return
		}
		v.SetInt(int64(i))
	default:
		panic("config: field " + field + " has unsupported type " + v.Type().String())
	}
}

func (d *decoder) mapping(n *yaml.Node, v reflect.Value, field string) {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, field, "want a mapping, got %s", describe(n))
		return
	}
	names, fields := yamlFields(v.Type())
	seen := make(map[string]int)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			d.errorf(k, field, "keys must be plain strings, got %s", describe(k))
			continue
		}
		f := join(field, k.Value)
		if first, dup := seen[k.Value]; dup {
			d.errorf(k, f, "duplicate key (first at line %d)", first)
			continue
		}
		seen[k.Value] = k.Line
		idx, known := fields[k.Value]
		if !known {
			d.errorf(k, f, "unknown key (expected one of: %s)", strings.Join(names, ", "))
			continue
		}
		d.lines[f] = k.Line
		if isNull(val) {
			// "key:" with nothing after it is the same as leaving the key
			// out, so that defaults and required-field checks apply.
			d.nulls[f] = true
			continue
		}
		d.value(val, v.Field(idx), f)
	}
}

// stringMap decodes a mapping with keys of the file's choosing, such as
// purposes, into a map with string keys. Each key is a field below field.
func (d *decoder) stringMap(n *yaml.Node, v reflect.Value, field string) {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, field, "want a mapping, got %s", describe(n))
		return
	}
	if v.Type().Key().Kind() != reflect.String {
		panic("config: field " + field + " is a map without string keys")
	}
	if v.IsNil() {
		v.Set(reflect.MakeMap(v.Type()))
	}
	seen := make(map[string]int)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode || isNull(k) {
			d.errorf(k, field, "keys must be plain strings, got %s", describe(k))
			continue
		}
		f := join(field, k.Value)
		if first, dup := seen[k.Value]; dup {
			d.errorf(k, f, "duplicate key (first at line %d)", first)
			continue
		}
		seen[k.Value] = k.Line
		d.lines[f] = k.Line
		// A key whose value is missing or bad is still in the map, so
		// that it is not reported again as absent.
		elem := reflect.New(v.Type().Elem()).Elem()
		if isNull(val) {
			d.errorf(k, f, "missing value")
		} else {
			d.value(val, elem, f)
		}
		v.SetMapIndex(reflect.ValueOf(k.Value).Convert(v.Type().Key()), elem)
	}
}

// yamlFields returns the keys of a struct type, in declaration order, and
// the index of the field of each.
func yamlFields(t reflect.Type) ([]string, map[string]int) {
	var names []string
	fields := make(map[string]int)
	for i := range t.NumField() {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		names = append(names, name)
		fields[name] = i
	}
	return names, fields
}
