package manifest

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/hashicorp/hcl/v2"
)

// Diagnostics are the problems found while loading a manifest, together
// with the parsed source files so that they can be rendered with snippets.
type Diagnostics struct {
	Diags hcl.Diagnostics
	Files map[string]*hcl.File
}

func newDiagnostics() *Diagnostics {
	return &Diagnostics{Files: map[string]*hcl.File{}}
}

func (d *Diagnostics) add(diags ...*hcl.Diagnostic) { d.Diags = append(d.Diags, diags...) }

// HasErrors reports whether any diagnostic is an error (warnings do not count).
func (d *Diagnostics) HasErrors() bool { return d != nil && d.Diags.HasErrors() }

// Error renders all diagnostics on one line each as "file:line,col: summary; detail".
func (d *Diagnostics) Error() string {
	if d == nil || len(d.Diags) == 0 {
		return "no diagnostics"
	}
	var lines []string
	for _, diag := range d.Diags {
		lines = append(lines, diag.Error())
	}
	return strings.Join(lines, "\n")
}

// WriteText writes the diagnostics in HCL's human format, with source
// snippets, wrapped at width columns (0 = no wrapping).
func (d *Diagnostics) WriteText(w io.Writer, color bool, width uint) error {
	if d == nil {
		return nil
	}
	return hcl.NewDiagnosticTextWriter(w, d.Files, width, color).WriteDiagnostics(d.Diags)
}

// JSONDiagnostic is one element of the JSON rendering.
type JSONDiagnostic struct {
	Severity string     `json:"severity"` // "error" or "warning"
	Summary  string     `json:"summary"`
	Detail   string     `json:"detail,omitempty"`
	Range    *JSONRange `json:"range,omitempty"`
	Snippet  string     `json:"snippet,omitempty"` // the source line(s) of Range
}

// JSONRange locates a diagnostic; lines and columns are 1-based.
type JSONRange struct {
	Filename string  `json:"filename"`
	Start    JSONPos `json:"start"`
	End      JSONPos `json:"end"`
}

// JSONPos is a position in a source file.
type JSONPos struct {
	Line   int `json:"line"`
	Column int `json:"column"`
	Byte   int `json:"byte"`
}

// JSON renders the diagnostics as a JSON array (never null).
func (d *Diagnostics) JSON() []byte {
	out := []JSONDiagnostic{}
	if d != nil {
		for _, diag := range d.Diags {
			jd := JSONDiagnostic{Severity: "error", Summary: diag.Summary, Detail: diag.Detail}
			if diag.Severity == hcl.DiagWarning {
				jd.Severity = "warning"
			}
			if r := diag.Subject; r != nil {
				jd.Range = &JSONRange{
					Filename: r.Filename,
					Start:    JSONPos{r.Start.Line, r.Start.Column, r.Start.Byte},
					End:      JSONPos{r.End.Line, r.End.Column, r.End.Byte},
				}
				jd.Snippet = d.snippet(*r)
			}
			out = append(out, jd)
		}
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil { // cannot happen: plain strings and ints
		panic(fmt.Sprintf("manifest: marshal diagnostics: %v", err))
	}
	return append(b, '\n')
}

// snippet returns the full source lines covered by r.
func (d *Diagnostics) snippet(r hcl.Range) string {
	f := d.Files[r.Filename]
	if f == nil || r.Start.Byte > len(f.Bytes) || r.End.Byte > len(f.Bytes) || r.Start.Byte > r.End.Byte {
		return ""
	}
	src := f.Bytes
	start := r.Start.Byte
	for start > 0 && src[start-1] != '\n' {
		start--
	}
	end := r.End.Byte
	for end < len(src) && src[end] != '\n' {
		end++
	}
	return string(src[start:end])
}

// errorf builds an error diagnostic.
func errorf(subject *hcl.Range, summary, format string, args ...any) *hcl.Diagnostic {
	return &hcl.Diagnostic{Severity: hcl.DiagError, Summary: summary, Detail: fmt.Sprintf(format, args...), Subject: subject}
}

func rangePtr(r hcl.Range) *hcl.Range { return &r }
