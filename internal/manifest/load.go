package manifest

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/typeexpr"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	ctyjson "github.com/zclconf/go-cty/cty/json"

	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
)

// EnvPrefix prefixes environment variables that set manifest variables:
// TDFORGE_VAR_<name>=<value>.
const EnvPrefix = "TDFORGE_VAR_"

// LoadOptions supply variable values and select the evaluation mode.
type LoadOptions struct {
	// Vars are -var name=value assignments (highest precedence). Naming an
	// undeclared variable is an error.
	Vars map[string]string
	// VarFiles are HCL files of name = value attributes, applied in order
	// (later files win). Undeclared names produce warnings, as in Terraform.
	VarFiles []string
	// Environ is the process environment (os.Environ()); entries named
	// TDFORGE_VAR_<name> set variables. Nil means no environment.
	Environ []string
	// AllowUnknown lets variables without any value evaluate to unknown
	// values; the affected attributes are listed in Manifest.Unknown
	// (builder validate and measure). When false (build) each is an error.
	AllowUnknown bool
}

// variable is a declared `variable` block and its final value.
type variable struct {
	name        string
	typ         cty.Type
	def         cty.Value // cty.NilVal when there is no default
	sensitive   bool
	description string
	validations []validation
	declRange   hcl.Range
	value       cty.Value
	valueRange  *hcl.Range // where the final value came from, nil for env/-var
	valueFrom   string     // "default", "environment", "var-file", "-var"
}

type validation struct {
	condition hcl.Expression
	message   hcl.Expression
	rng       hcl.Range
}

type loader struct {
	opts      LoadOptions
	path      string
	dir       string // absolute manifest directory
	relDir    string // manifest directory as given (path.root)
	parser    *hclparse.Parser
	diags     *Diagnostics
	vars      map[string]*variable
	varNames  []string // declaration order
	unset     map[string]bool
	locals    map[string]*hcl.Attribute
	localDeps map[string]map[string]bool // local name -> unset variables it depends on
	ctx       *hcl.EvalContext
	fileEnd   hcl.Range // end of the manifest, the subject for missing blocks
	unknown   []string
	m         *Manifest
}

// Load parses, evaluates and validates the manifest at path. The manifest is
// nil when the diagnostics contain errors; warnings may accompany a manifest.
func Load(path string, opts LoadOptions) (*Manifest, *Diagnostics) {
	l := &loader{
		opts:      opts,
		path:      path,
		relDir:    filepath.Dir(path),
		parser:    hclparse.NewParser(),
		diags:     newDiagnostics(),
		vars:      map[string]*variable{},
		unset:     map[string]bool{},
		locals:    map[string]*hcl.Attribute{},
		localDeps: map[string]map[string]bool{},
	}
	defer func() { l.diags.Files = l.parser.Files() }()
	abs, err := filepath.Abs(l.relDir)
	if err != nil {
		l.diags.add(errorf(nil, "Cannot resolve manifest directory", "%s: %v", l.relDir, err))
		return nil, l.diags
	}
	l.dir = abs
	src, err := os.ReadFile(path)
	if err != nil {
		l.diags.add(errorf(nil, "Cannot read manifest", "%v. Pass the path of an existing .hcl manifest.", err))
		return nil, l.diags
	}
	f, diags := l.parser.ParseHCL(src, path)
	l.diags.add(diags...)
	if diags.HasErrors() {
		return nil, l.diags
	}
	l.fileEnd = hcl.Range{Filename: path, Start: hcl.InitialPos, End: hcl.InitialPos}
	if body, ok := f.Body.(*hclsyntax.Body); ok {
		l.fileEnd = body.EndRange
	}
	content, diags := f.Body.Content(rootSchema)
	l.diags.add(diags...)

	var localsBlocks []*hcl.Block
	for _, b := range content.Blocks {
		switch b.Type {
		case "variable":
			l.declareVariable(b)
		case "locals":
			localsBlocks = append(localsBlocks, b)
		}
	}
	l.assignVariables()
	l.evalLocals(localsBlocks)
	l.m = &Manifest{Path: path, Dir: l.dir, Variables: map[string]string{}}
	l.decodeBlocks(content)
	l.m.Unknown = l.unknown
	for _, name := range l.varNames {
		v := l.vars[name]
		if v.sensitive || !v.value.IsWhollyKnown() || v.value.IsNull() {
			continue
		}
		l.m.Variables[name] = renderValue(v.value)
	}
	if !l.opts.AllowUnknown {
		l.requireVariablesUsed()
	}
	if l.diags.HasErrors() {
		return nil, l.diags
	}
	return l.m, l.diags
}

var rootSchema = &hcl.BodySchema{
	Blocks: []hcl.BlockHeaderSchema{
		{Type: "variable", LabelNames: []string{"name"}},
		{Type: "locals"},
		{Type: "image"},
		{Type: "firmware"},
		{Type: "kernel"},
		{Type: "vm"},
		{Type: "tdx"},
		{Type: "network"},
		{Type: "agent"},
		{Type: "key_broker"},
		{Type: "payload", LabelNames: []string{"name"}},
		{Type: "service", LabelNames: []string{"name"}},
		{Type: "volume", LabelNames: []string{"name"}},
	},
}

var variableSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "type"}, {Name: "default"}, {Name: "description"}, {Name: "sensitive"}},
	Blocks:     []hcl.BlockHeaderSchema{{Type: "validation"}},
}

var validationSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "condition", Required: true}, {Name: "error_message", Required: true}},
}

// constAttr evaluates attribute name of content with nothing in scope;
// ok is false when it is absent or does not evaluate.
func (l *loader) constAttr(content *hcl.BodyContent, name string) (*hcl.Attribute, cty.Value, bool) {
	a := content.Attributes[name]
	if a == nil {
		return nil, cty.NilVal, false
	}
	val, diags := a.Expr.Value(nil)
	l.diags.add(diags...)
	return a, val, !diags.HasErrors()
}

func (l *loader) declareVariable(b *hcl.Block) {
	name := b.Labels[0]
	if !hclsyntax.ValidIdentifier(name) {
		l.diags.add(errorf(rangePtr(b.LabelRanges[0]), "Invalid variable name",
			"%q is not a valid variable name: use letters, digits, underscores and dashes, starting with a letter.", name))
		return
	}
	if prev, ok := l.vars[name]; ok {
		l.diags.add(errorf(rangePtr(b.DefRange), "Duplicate variable declaration",
			"A variable named %q was already declared at %s. Variable names must be unique.", name, prev.declRange))
		return
	}
	v := &variable{name: name, typ: cty.DynamicPseudoType, def: cty.NilVal, declRange: b.DefRange}
	content, diags := b.Body.Content(variableSchema)
	l.diags.add(diags...)
	if a := content.Attributes["type"]; a != nil {
		ty, diags := typeexpr.TypeConstraint(a.Expr)
		l.diags.add(diags...)
		if !diags.HasErrors() {
			v.typ = ty
		}
	}
	if a, val, ok := l.constAttr(content, "description"); ok {
		if val.Type() != cty.String || val.IsNull() {
			l.diags.add(errorf(rangePtr(a.Expr.Range()), "Invalid description", "A variable description must be a string."))
		} else {
			v.description = val.AsString()
		}
	}
	if a, val, ok := l.constAttr(content, "sensitive"); ok {
		if val.Type() != cty.Bool || val.IsNull() {
			l.diags.add(errorf(rangePtr(a.Expr.Range()), "Invalid sensitive value", "sensitive must be true or false."))
		} else {
			v.sensitive = val.True()
		}
	}
	if a, val, ok := l.constAttr(content, "default"); ok {
		conv, err := convert.Convert(val, v.typ)
		if err != nil {
			l.diags.add(errorf(rangePtr(a.Expr.Range()), "Invalid default value for variable",
				"This default value is not compatible with the variable's type constraint %s: %s.", typeexpr.TypeString(v.typ), err))
		} else {
			v.def = conv
			v.value, v.valueRange, v.valueFrom = conv, rangePtr(a.Expr.Range()), "default"
		}
	}
	for _, vb := range content.Blocks {
		vc, diags := vb.Body.Content(validationSchema)
		l.diags.add(diags...)
		if diags.HasErrors() {
			continue
		}
		val := validation{condition: vc.Attributes["condition"].Expr, message: vc.Attributes["error_message"].Expr, rng: vb.DefRange}
		ok := true
		for _, expr := range []hcl.Expression{val.condition, val.message} {
			for _, t := range expr.Variables() {
				if t.RootName() == "var" && len(t) > 1 {
					if a, isAttr := t[1].(hcl.TraverseAttr); isAttr && a.Name == name {
						continue
					}
				}
				l.diags.add(errorf(rangePtr(t.SourceRange()), "Invalid reference in variable validation",
					"The condition and error_message for variable %q can only refer to the variable itself, using var.%s.", name, name))
				ok = false
			}
		}
		if ok {
			v.validations = append(v.validations, val)
		}
	}
	l.vars[name] = v
	l.varNames = append(l.varNames, name)
}

// assignVariables applies env, var-files and -var in increasing precedence,
// marks unset variables unknown and runs validation rules.
func (l *loader) assignVariables() {
	for _, kv := range l.opts.Environ {
		k, val, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(k, EnvPrefix) {
			continue
		}
		name := strings.TrimPrefix(k, EnvPrefix)
		if v := l.vars[name]; v != nil {
			l.setRaw(v, val, "environment", "environment variable "+k)
		}
	}
	for _, vf := range l.opts.VarFiles {
		l.applyVarFile(vf)
	}
	names := make([]string, 0, len(l.opts.Vars))
	for n := range l.opts.Vars {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		v := l.vars[name]
		if v == nil {
			l.diags.add(errorf(nil, "Value for undeclared variable",
				"A variable named %q was assigned with -var, but the manifest %s does not declare it. %s", name, l.path, l.declaredVarsHint()))
			continue
		}
		l.setRaw(v, l.opts.Vars[name], "-var", fmt.Sprintf("-var %s=...", name))
	}
	for _, name := range l.varNames {
		v := l.vars[name]
		if v.value == cty.NilVal {
			v.value = cty.UnknownVal(v.typ)
			l.unset[name] = true
			continue
		}
		l.validateVariable(v)
	}
}

func (l *loader) declaredVarsHint() string {
	if len(l.varNames) == 0 {
		return "It declares no variables."
	}
	return "Declared variables: " + strings.Join(l.varNames, ", ") + "."
}

// setRaw sets v from a string given on the command line or in the
// environment: primitive types take it literally, others parse it as an HCL
// expression (as Terraform does).
func (l *loader) setRaw(v *variable, raw, from, source string) {
	var val cty.Value
	if v.typ.IsPrimitiveType() || v.typ == cty.DynamicPseudoType {
		val = cty.StringVal(raw)
	} else {
		filename := fmt.Sprintf("<value for var.%s>", v.name)
		expr, diags := hclsyntax.ParseExpression([]byte(raw), filename, hcl.InitialPos)
		l.parser.AddFile(filename, &hcl.File{Bytes: []byte(raw)})
		if !diags.HasErrors() {
			var d hcl.Diagnostics
			val, d = expr.Value(nil)
			diags = append(diags, d...)
		}
		if diags.HasErrors() {
			for _, d := range diags {
				d.Detail = fmt.Sprintf("%s (from %s). %s", d.Detail, source, "Values of complex types are HCL expressions, e.g. [\"a\", \"b\"] or {k = \"v\"}.")
			}
			l.diags.add(diags...)
			return
		}
	}
	conv, err := convert.Convert(val, v.typ)
	if err != nil {
		l.diags.add(errorf(nil, "Invalid value for variable",
			"The value for var.%s from %s is not a valid %s: %s.", v.name, source, typeexpr.TypeString(v.typ), err))
		return
	}
	v.value, v.valueRange, v.valueFrom = conv, nil, from
}

func (l *loader) applyVarFile(path string) {
	f, diags := l.parser.ParseHCLFile(path)
	l.diags.add(diags...)
	if diags.HasErrors() {
		return
	}
	attrs, diags := f.Body.JustAttributes()
	l.diags.add(diags...)
	names := make([]string, 0, len(attrs))
	for n := range attrs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		a := attrs[name]
		v := l.vars[name]
		if v == nil {
			l.diags.add(&hcl.Diagnostic{Severity: hcl.DiagWarning, Summary: "Value for undeclared variable",
				Detail:  fmt.Sprintf("The variable file assigns %q, but the manifest %s does not declare it; the value is ignored. %s", name, l.path, l.declaredVarsHint()),
				Subject: rangePtr(a.NameRange)})
			continue
		}
		val, diags := a.Expr.Value(nil)
		l.diags.add(diags...)
		if diags.HasErrors() {
			continue
		}
		conv, err := convert.Convert(val, v.typ)
		if err != nil {
			l.diags.add(errorf(rangePtr(a.Expr.Range()), "Invalid value for variable",
				"The value for var.%s is not a valid %s: %s.", name, typeexpr.TypeString(v.typ), err))
			continue
		}
		v.value, v.valueRange, v.valueFrom = conv, rangePtr(a.Expr.Range()), "var-file"
	}
}

func (l *loader) validateVariable(v *variable) {
	ctx := &hcl.EvalContext{
		Variables: map[string]cty.Value{"var": cty.ObjectVal(map[string]cty.Value{v.name: v.value})},
		Functions: functions(l.dir),
	}
	for _, rule := range v.validations {
		res, diags := rule.condition.Value(ctx)
		l.diags.add(diags...)
		if diags.HasErrors() {
			continue
		}
		res, err := convert.Convert(res, cty.Bool)
		if err != nil || res.IsNull() {
			l.diags.add(errorf(rangePtr(rule.condition.Range()), "Invalid validation condition",
				"The condition for variable %q must be true or false.", v.name))
			continue
		}
		if !res.IsKnown() || res.True() {
			continue
		}
		msg := "(no error_message)"
		if m, diags := rule.message.Value(ctx); !diags.HasErrors() && m.Type() == cty.String && m.IsKnown() && !m.IsNull() {
			msg = m.AsString()
		}
		subject := v.valueRange
		where := ""
		if subject == nil {
			subject = rangePtr(rule.condition.Range())
			where = fmt.Sprintf(" The value came from %s.", v.valueFrom)
		}
		l.diags.add(errorf(subject, "Invalid value for variable",
			"%s\n\nThis was checked by the validation rule at %s.%s", msg, rule.rng, where))
		// Evaluate dependents as unknown so the bad value is reported once.
		v.value = cty.UnknownVal(v.typ)
		return
	}
}

// requireVariablesUsed reports unset variables that no attribute uses (used
// ones are reported at the attribute).
func (l *loader) requireVariablesUsed() {
	reported := map[string]bool{}
	for _, d := range l.diags.Diags {
		if d.Summary == "Variable has no value" {
			if name, ok := d.Extra.(string); ok {
				reported[name] = true
			}
		}
	}
	for _, name := range l.varNames {
		if l.unset[name] && !reported[name] {
			v := l.vars[name]
			l.diags.add(&hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Variable has no value",
				Detail:  fmt.Sprintf("variable %s has no value: set -var %s=... or %s%s.", name, name, EnvPrefix, name),
				Subject: rangePtr(v.declRange), Extra: name})
		}
	}
}

// checkRefs verifies that every reference in expr names something declared.
func (l *loader) checkRefs(expr hcl.Expression) bool {
	ok := true
	for _, t := range expr.Variables() {
		root := t.RootName()
		var attr string
		if len(t) > 1 {
			if a, isAttr := t[1].(hcl.TraverseAttr); isAttr {
				attr = a.Name
			}
		}
		rng := rangePtr(t.SourceRange())
		switch root {
		case "var":
			if attr == "" {
				l.diags.add(errorf(rng, "Invalid reference", "Refer to an input variable by name, e.g. var.name."))
				ok = false
			} else if l.vars[attr] == nil {
				l.diags.add(errorf(rng, "Reference to undeclared input variable",
					"An input variable named %q has not been declared. Declare it with a variable %q { } block. %s", attr, attr, l.declaredVarsHint()))
				ok = false
			}
		case "local":
			if attr == "" {
				l.diags.add(errorf(rng, "Invalid reference", "Refer to a local value by name, e.g. local.name."))
				ok = false
			} else if l.locals[attr] == nil {
				l.diags.add(errorf(rng, "Reference to undeclared local value",
					"A local value named %q has not been declared. Declare it in a locals { } block.", attr))
				ok = false
			}
		case "path":
			if attr != "root" && attr != "module" {
				l.diags.add(errorf(rng, "Invalid path attribute", "The path object has the attributes root and module (both the manifest directory)."))
				ok = false
			}
		default:
			l.diags.add(errorf(rng, "Unknown variable",
				"There is no variable named %q. References start with var., local. or path.", root))
			ok = false
		}
	}
	return ok
}

// unsetDeps lists the unset variables expr depends on, directly or via locals.
func (l *loader) unsetDeps(expr hcl.Expression) []string {
	set := map[string]bool{}
	for _, t := range expr.Variables() {
		if len(t) < 2 {
			continue
		}
		a, isAttr := t[1].(hcl.TraverseAttr)
		if !isAttr {
			continue
		}
		switch t.RootName() {
		case "var":
			if l.unset[a.Name] {
				set[a.Name] = true
			}
		case "local":
			for n := range l.localDeps[a.Name] {
				set[n] = true
			}
		}
	}
	out := make([]string, 0, len(set))
	for n := range set {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func (l *loader) evalLocals(blocks []*hcl.Block) {
	for _, b := range blocks {
		attrs, diags := b.Body.JustAttributes()
		l.diags.add(diags...)
		names := make([]string, 0, len(attrs))
		for n := range attrs {
			names = append(names, n)
		}
		sort.Slice(names, func(i, j int) bool { return attrs[names[i]].Range.Start.Byte < attrs[names[j]].Range.Start.Byte })
		for _, n := range names {
			if prev := l.locals[n]; prev != nil {
				l.diags.add(errorf(rangePtr(attrs[n].NameRange), "Duplicate local value",
					"A local value named %q was already defined at %s. Local value names must be unique.", n, prev.Range))
				continue
			}
			l.locals[n] = attrs[n]
		}
	}
	names := make([]string, 0, len(l.locals))
	for n := range l.locals {
		names = append(names, n)
	}
	sort.Strings(names)

	values := map[string]cty.Value{}
	state := map[string]int{} // 0 new, 1 visiting, 2 done
	var stack []string
	var visit func(n string)
	visit = func(n string) {
		switch state[n] {
		case 2:
			return
		case 1:
			i := len(stack) - 1
			for stack[i] != n {
				i--
			}
			cycle := append(append([]string{}, stack[i:]...), n)
			for j := range cycle {
				cycle[j] = "local." + cycle[j]
			}
			a := l.locals[stack[len(stack)-1]] // the reference that closes the cycle
			l.diags.add(errorf(rangePtr(a.Expr.Range()), "Cycle in local values",
				"local.%s depends on itself: %s. Break the cycle by computing one of them without the others.", n, strings.Join(cycle, " -> ")))
			return
		}
		state[n] = 1
		stack = append(stack, n)
		a := l.locals[n]
		refsOK := l.checkRefs(a.Expr)
		deps := map[string]bool{}
		for _, t := range a.Expr.Variables() {
			if t.RootName() == "local" && len(t) > 1 {
				if at, ok := t[1].(hcl.TraverseAttr); ok && l.locals[at.Name] != nil {
					visit(at.Name)
				}
			}
		}
		stack = stack[:len(stack)-1]
		for _, v := range l.unsetDeps(a.Expr) {
			deps[v] = true
		}
		l.localDeps[n] = deps
		val := cty.DynamicVal
		if refsOK {
			l.ctx = l.evalContext(values)
			v, diags := a.Expr.Value(l.ctx)
			l.diags.add(diags...)
			if !diags.HasErrors() {
				val = v
			}
		}
		values[n] = val
		state[n] = 2
	}
	for _, n := range names {
		visit(n)
	}
	l.ctx = l.evalContext(values)
}

func (l *loader) evalContext(locals map[string]cty.Value) *hcl.EvalContext {
	vars := map[string]cty.Value{}
	for n, v := range l.vars {
		vars[n] = v.value
	}
	lv := map[string]cty.Value{}
	for n, v := range locals {
		lv[n] = v
	}
	return &hcl.EvalContext{
		Variables: map[string]cty.Value{
			"var":   cty.ObjectVal(vars),
			"local": cty.ObjectVal(lv),
			"path": cty.ObjectVal(map[string]cty.Value{
				"root":   cty.StringVal(l.relDir),
				"module": cty.StringVal(l.relDir),
			}),
		},
		Functions: functions(l.dir),
	}
}

// renderValue renders a known value for build info: strings as-is, others as JSON.
func renderValue(v cty.Value) string {
	if v.Type() == cty.String {
		return v.AsString()
	}
	b, err := ctyjson.Marshal(v, v.Type())
	if err != nil {
		return v.GoString()
	}
	return string(b)
}
