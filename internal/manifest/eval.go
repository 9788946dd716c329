package manifest

import (
	"fmt"
	"math/big"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
)

// block is one decoded block body with the path used for Manifest.Unknown
// ("vm", "payload.model.ollama_model.gguf").
type block struct {
	l       *loader
	path    string
	content *hcl.BodyContent
	def     hcl.Range // the block header
	known   map[string]bool
}

func (l *loader) open(b *hcl.Block, path string, schema *hcl.BodySchema) *block {
	content, diags := b.Body.Content(schema)
	l.diags.add(diags...)
	return &block{l: l, path: path, content: content, def: b.DefRange, known: map[string]bool{}}
}

// attr returns the attribute, or nil if absent.
func (b *block) attr(name string) *hcl.Attribute { return b.content.Attributes[name] }

// isSet reports whether name was given a known, non-null value of the right type.
func (b *block) isSet(name string) bool { return b.known[name] }

// exprRange is the subject for errors about the value of name.
func (b *block) exprRange(name string) *hcl.Range {
	if a := b.attr(name); a != nil {
		return rangePtr(a.Expr.Range())
	}
	return rangePtr(b.def)
}

// value evaluates name and converts it to ty. It returns cty.NilVal when the
// attribute is absent, null, unknown or invalid (and records diagnostics and
// unknowns as needed).
func (b *block) value(name string, ty cty.Type) cty.Value {
	a := b.attr(name)
	if a == nil {
		return cty.NilVal
	}
	l := b.l
	if !l.checkRefs(a.Expr) {
		return cty.NilVal
	}
	v, diags := a.Expr.Value(l.ctx)
	l.diags.add(diags...)
	if diags.HasErrors() {
		return cty.NilVal
	}
	if !v.IsWhollyKnown() {
		path := b.path + "." + name
		l.unknown = append(l.unknown, path)
		if !l.opts.AllowUnknown {
			for _, dep := range l.unsetDeps(a.Expr) {
				l.diags.add(&hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Variable has no value",
					Detail:  fmt.Sprintf("variable %s has no value: set -var %s=... or %s%s (%s depends on it).", dep, dep, EnvPrefix, dep, path),
					Subject: rangePtr(a.Expr.Range()), Extra: dep})
			}
		}
		return cty.NilVal
	}
	if v.IsNull() {
		return cty.NilVal
	}
	conv, err := convert.Convert(v, ty)
	if err != nil {
		l.diags.add(errorf(rangePtr(a.Expr.Range()), "Incorrect attribute value type",
			"Inappropriate value for attribute %q: %s.", name, err))
		return cty.NilVal
	}
	b.known[name] = true
	return conv
}

func (b *block) str(name, def string) string {
	v := b.value(name, cty.String)
	if v == cty.NilVal {
		return def
	}
	return v.AsString()
}

func (b *block) boolean(name string, def bool) bool {
	v := b.value(name, cty.Bool)
	if v == cty.NilVal {
		return def
	}
	return v.True()
}

// integer reads a whole number in [min, max].
func (b *block) integer(name string, def, min, max int64) int64 {
	v := b.value(name, cty.Number)
	if v == cty.NilVal {
		return def
	}
	bf := v.AsBigFloat()
	i, acc := bf.Int64()
	if !bf.IsInt() || acc != big.Exact || i < min || i > max {
		b.known[name] = false
		b.l.diags.add(errorf(b.exprRange(name), "Invalid "+name,
			"%s must be a whole number from %d to %d; got %s.", name, min, max, bf.Text('g', 20)))
		return def
	}
	return i
}

func (b *block) strList(name string) []string {
	v := b.value(name, cty.List(cty.String))
	if v == cty.NilVal {
		return nil
	}
	var out []string
	for _, e := range v.AsValueSlice() {
		if e.IsNull() {
			b.known[name] = false
			b.l.diags.add(errorf(b.exprRange(name), "Invalid "+name, "%s must not contain null elements.", name))
			return nil
		}
		out = append(out, e.AsString())
	}
	return out
}

func (b *block) strMap(name string) map[string]string {
	v := b.value(name, cty.Map(cty.String))
	if v == cty.NilVal {
		return nil
	}
	out := map[string]string{}
	for k, e := range v.AsValueMap() {
		if e.IsNull() {
			b.known[name] = false
			b.l.diags.add(errorf(b.exprRange(name), "Invalid "+name, "%s[%q] must not be null.", name, k))
			return nil
		}
		out[k] = e.AsString()
	}
	return out
}

// anyMap reads an object of JSON-like values (numbers, strings, bools, lists).
func (b *block) anyMap(name string) map[string]any {
	v := b.value(name, cty.DynamicPseudoType)
	if v == cty.NilVal {
		return nil
	}
	ty := v.Type()
	if !ty.IsObjectType() && !ty.IsMapType() {
		b.known[name] = false
		b.l.diags.add(errorf(b.exprRange(name), "Incorrect attribute value type",
			"Inappropriate value for attribute %q: an object is required, e.g. { temperature = 0 }.", name))
		return nil
	}
	out := map[string]any{}
	for k, e := range v.AsValueMap() {
		g, err := goValue(e)
		if err != nil {
			b.known[name] = false
			b.l.diags.add(errorf(b.exprRange(name), "Invalid "+name, "%s.%s: %v.", name, k, err))
			return nil
		}
		out[k] = g
	}
	return out
}

// goValue converts a known value to int64, float64, string, bool or []any.
func goValue(v cty.Value) (any, error) {
	if v.IsNull() {
		return nil, fmt.Errorf("null is not allowed")
	}
	ty := v.Type()
	switch {
	case ty == cty.String:
		return v.AsString(), nil
	case ty == cty.Bool:
		return v.True(), nil
	case ty == cty.Number:
		bf := v.AsBigFloat()
		if bf.IsInt() {
			if i, acc := bf.Int64(); acc == big.Exact {
				return i, nil
			}
		}
		f, _ := bf.Float64()
		return f, nil
	case ty.IsListType() || ty.IsTupleType() || ty.IsSetType():
		out := []any{}
		for _, e := range v.AsValueSlice() {
			g, err := goValue(e)
			if err != nil {
				return nil, err
			}
			out = append(out, g)
		}
		return out, nil
	}
	return nil, fmt.Errorf("values must be strings, numbers, bools or lists of them, not %s", ty.FriendlyName())
}

// fail records an error about attribute name's value unless that value is
// unknown or absent.
func (b *block) fail(name, summary, format string, args ...any) {
	b.known[name] = false
	b.l.diags.add(errorf(b.exprRange(name), summary, format, args...))
}

// check calls fail when ok is false and the attribute has a known value.
func (b *block) check(name string, ok bool, summary, format string, args ...any) bool {
	if ok || !b.isSet(name) {
		return true
	}
	b.fail(name, summary, format, args...)
	return false
}

// blocksOf returns the nested blocks of type typ, reporting duplicates when
// only one is allowed.
func (b *block) single(typ string) *hcl.Block {
	var first *hcl.Block
	for _, nb := range b.content.Blocks {
		if nb.Type != typ {
			continue
		}
		if first != nil {
			b.l.diags.add(errorf(rangePtr(nb.DefRange), "Duplicate "+typ+" block",
				"Only one %s block is allowed here; the first was defined at %s.", typ, first.DefRange))
			continue
		}
		first = nb
	}
	return first
}

// exclusive reports an error if more than one of names is set, and returns
// the set one ("" if none).
func (b *block) exclusive(names ...string) string {
	var set []string
	for _, n := range names {
		if b.attr(n) != nil {
			set = append(set, n)
		}
	}
	if len(set) > 1 {
		b.l.diags.add(errorf(rangePtr(b.attr(set[1]).Range), "Conflicting arguments",
			"%s and %s cannot both be set in %s; use exactly one of %s.", set[0], set[1], b.path, strings.Join(names, ", ")))
	}
	if len(set) == 0 {
		return ""
	}
	return set[0]
}
