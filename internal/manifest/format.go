package manifest

import (
	"bytes"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/hashicorp/hcl/v2/hclwrite"
)

// Format returns src in canonical HCL layout (indentation, aligned equals
// signs, spacing), like terraform fmt. Syntax errors are returned as
// hcl.Diagnostics and src is not changed.
func Format(src []byte) ([]byte, error) {
	return FormatFile(src, "<input>")
}

// FormatFile is Format with filename used in syntax error positions.
func FormatFile(src []byte, filename string) ([]byte, error) {
	if _, diags := hclsyntax.ParseConfig(src, filename, hcl.InitialPos); diags.HasErrors() {
		return nil, diags
	}
	out := hclwrite.Format(src)
	// A formatted file ends with exactly one newline.
	out = append(bytes.TrimRight(out, "\n"), '\n')
	if len(bytes.TrimSpace(out)) == 0 {
		return []byte{}, nil
	}
	return out, nil
}
