// Package archtest checks that evx's packages import each other only
// downwards, as docs/design.md section 2.2 draws them.
package archtest

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// allowed lists, for each evx package, the evx packages it may import.
// Only the imports of non-test Go files are checked. Test helper packages
// whose names end in "test" (storage/storagetest, internal/evxtest) are
// not listed: they may import what they test. internal/testworld is
// listed, since its name does not say so: it may import anything but the
// gateway, whose own tests import it.
var allowed = map[string][]string{
	"evx/cmd/evx":          {"evx/agreement", "evx/api", "evx/audit", "evx/client", "evx/config", "evx/crypto", "evx/gateway", "evx/internal/devenv", "evx/internal/keyfile", "evx/storage", "evx/transfer"},
	"evx/gateway":          {"evx/agreement", "evx/api", "evx/audit", "evx/crypto", "evx/storage", "evx/transfer"},
	"evx/client":           {"evx/api", "evx/audit", "evx/crypto"},
	"evx/audit":            {"evx/crypto", "evx/storage"},
	"evx/internal/devenv":  {"evx/agreement", "evx/api", "evx/config", "evx/crypto", "evx/transfer"},
	"evx/config":           {"evx/agreement", "evx/api", "evx/crypto", "evx/internal/keyfile"},
	"evx/transfer":         {"evx/crypto"},
	"evx/api":              {"evx/crypto"},
	"evx/crypto":           {},
	"evx/agreement":        {},
	"evx/storage":          {},
	"evx/internal/keyfile": {},

	"evx/internal/testworld": {"evx/client", "evx/crypto", "evx/internal/devenv", "evx/storage", "evx/transfer"},
}

func TestImportsPointDownwards(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", "evx/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg, imports := fields[0], fields[1:]
		if strings.HasPrefix(pkg, "evx/internal/archtest") || strings.HasSuffix(pkg, "test") {
			continue // test helpers may import what they test
		}
		may, ok := allowed[pkg]
		if !ok {
			t.Errorf("package %s is not in the table of allowed imports: add it here and to docs/design.md section 2.2", pkg)
			continue
		}
		for _, imp := range imports {
			if strings.HasPrefix(imp, "evx/") && !slices.Contains(may, imp) {
				t.Errorf("%s imports %s, which docs/design.md section 2.2 does not allow", pkg, imp)
			}
		}
	}
}
