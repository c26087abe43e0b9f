package caddymodule

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// referenceModules maps the module column of the JSON reference
// (docs/reference.md) to the type whose JSON fields it documents.
var referenceModules = map[string]any{
	"app `apikeys`":            App{},
	"`apikeys.stores.bolt`":    BoltStore{},
	"`apikeys.stores.etcd`":    EtcdStore{},
	"`jwt`":                    JWTConfig{},
	"handler `apikeys_api`":    APIHandler{},
	"handler `apikey_auth`":    APIKeyGate{},
	"handler `apikeys_ui`":     KeyPage{},
	"handler `apikeys_leaks`":  LeakHandler{},
	"handler `apikeys_verify`": VerifyHandler{},
	"app `apikeys_ext_authz`":  ExtAuthz{},
}

// TestJSONReferenceMatchesTheCode: the JSON reference names exactly
// the JSON fields of each module, and where a field's doc comment states
// a default, the reference states the same one.
func TestJSONReferenceMatchesTheCode(t *testing.T) {
	rows := jsonReference(t)
	docs := fieldDocs(t)
	for label, v := range referenceModules {
		typ := reflect.TypeOf(v)
		fields := jsonFields(typ)
		documented := rows[label]
		if documented == nil {
			t.Errorf("the JSON reference (%s) has no rows for %s", referenceDoc, label)
			continue
		}
		for name, f := range fields {
			meaning, ok := documented[name]
			if !ok {
				t.Errorf("%s: field %q (%s.%s) is not in the JSON reference (%s)", label, name, f.owner, f.goName, referenceDoc)
				continue
			}
			doc := docs[f.owner+"."+f.goName]
			if doc == "" {
				t.Errorf("%s.%s has no doc comment", f.owner, f.goName)
				continue
			}
			if strings.HasPrefix(meaning, "As for ") {
				continue // documented with another module's row
			}
			def, inDoc := statedDefault(doc)
			refDef, inRef := statedDefault(meaning)
			if inDoc != inRef || normalize(def) != normalize(refDef) {
				t.Errorf("%s: %q: the doc comment says the default is %q; %s says %q", label, name, def, referenceDoc, refDef)
			}
		}
		for name := range documented {
			if _, ok := fields[name]; !ok {
				t.Errorf("%s: %s documents %q, which %s does not have", label, referenceDoc, name, typ.Name())
			}
		}
	}
}

// TestJSONReferenceNamesNestedMembers: where the JSON reference
// shows an object's members inline ({"disabled"?, …}), it names every
// JSON field of the type behind it.
func TestJSONReferenceNamesNestedMembers(t *testing.T) {
	rows := jsonReference(t)
	for _, c := range []struct {
		name, module, field string
		types               []any
	}{
		{"lockout", "app `apikeys`", "lockout", []any{LockoutConfig{}}},
		{"unknown_key_budget", "app `apikeys`", "unknown_key_budget", []any{UnknownKeyBudget{}}},
		{"users", "app `apikeys`", "users", []any{User{}}},
		{"plans", "app `apikeys`", "plans", []any{PlanConfig{}, RateConfig{}, CreditsConfig{}}},
		{"etcd tls", "`apikeys.stores.etcd`", "tls", []any{EtcdTLS{}}},
		{"verify routes", "handler `apikeys_verify`", "routes", []any{VerifyRoute{}}},
		{"ext_authz tls", "app `apikeys_ext_authz`", "tls", []any{ExtAuthzTLS{}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			meaning := rows[c.module][c.field]
			for _, v := range c.types {
				for name := range jsonFields(reflect.TypeOf(v)) {
					if !strings.Contains(meaning, `"`+name+`"`) {
						t.Errorf("%s %q: %s does not name its member %q: %s", c.module, c.field, referenceDoc, name, meaning)
					}
				}
			}
		})
	}
}

type jsonField struct{ owner, goName string }

// jsonFields lists a type's JSON fields, those of embedded structs too.
func jsonFields(typ reflect.Type) map[string]jsonField {
	out := map[string]jsonField{}
	for i := range typ.NumField() {
		f := typ.Field(i)
		tag := f.Tag.Get("json")
		if f.Anonymous && tag == "" {
			for k, v := range jsonFields(f.Type) {
				out[k] = v
			}
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if !f.IsExported() || name == "-" || name == "" {
			continue
		}
		out[name] = jsonField{typ.Name(), f.Name}
	}
	return out
}

// referenceDoc is the configuration reference, from the repository root.
const referenceDoc = "docs/reference.md"

// jsonReference reads the reference's JSON table: module label -> field
// -> the meaning column.
func jsonReference(t *testing.T) map[string]map[string]string {
	b, err := os.ReadFile(filepath.Join("..", filepath.FromSlash(referenceDoc)))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n## JSON\n")
	if !ok {
		t.Fatalf("%s has no JSON reference", referenceDoc)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	out := map[string]map[string]string{}
	module := ""
	names := regexp.MustCompile("`([a-z_]+)`")
	for _, line := range strings.Split(section, "\n") {
		cols := strings.Split(line, " | ")
		if !strings.HasPrefix(line, "| ") || len(cols) < 3 || strings.HasPrefix(line, "|---") || strings.HasPrefix(line, "| Module") {
			continue
		}
		if m := strings.TrimSpace(strings.TrimPrefix(cols[0], "|")); m != "" {
			module, _, _ = strings.Cut(m, " (")
			if out[module] == nil {
				out[module] = map[string]string{}
			}
		}
		meaning := strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(strings.Join(cols[2:], " | ")), "|"))
		for _, n := range names.FindAllStringSubmatch(cols[1], -1) {
			out[module][n[1]] = meaning
		}
	}
	return out
}

// fieldDocs reads the doc comments of the package's struct fields:
// "Type.Field" -> comment.
func fieldDocs(t *testing.T) map[string]string {
	fset := token.NewFileSet()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.ParseComments)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			ts, ok := n.(*ast.TypeSpec)
			if !ok {
				return true
			}
			st, ok := ts.Type.(*ast.StructType)
			if !ok {
				return true
			}
			for _, fld := range st.Fields.List {
				for _, id := range fld.Names {
					out[ts.Name.Name+"."+id.Name] = fld.Doc.Text()
				}
			}
			return true
		})
	}
	return out
}

var defaultPhrase = regexp.MustCompile(`Default:?\s+(.+?)(?:\.\s|\.$|[;,(|]|$)`)

// statedDefault is the default a doc comment states ("Default: 5s.").
func statedDefault(doc string) (string, bool) {
	m := defaultPhrase.FindStringSubmatch(strings.Join(strings.Fields(doc), " "))
	if m == nil {
		return "", false
	}
	return strings.TrimSpace(m[1]), true
}

// normalize drops quotes, backticks and letter case, so that `5s`, "5s"
// and 5s compare equal.
func normalize(s string) string {
	s = strings.NewReplacer("`", "", `"`, "", "'", "").Replace(s)
	return strings.ToLower(strings.Join(strings.Fields(s), " "))
}

// TestREADMEMinimalCaddyfileAdapts: the minimal Caddyfile README shows
// is one Caddy reads, with the API, the key check and the upstream.
func TestREADMEMinimalCaddyfileAdapts(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n## A minimal Caddyfile\n")
	_, block, ok2 := strings.Cut(section, "```caddyfile\n")
	block, _, ok3 := strings.Cut(block, "```")
	if !ok || !ok2 || !ok3 {
		t.Fatal(`README has no Caddyfile under "A minimal Caddyfile"`)
	}
	out, err := adapt(t, block)
	if err != nil {
		t.Fatalf("README's minimal Caddyfile: %v", err)
	}
	for _, handler := range []string{"apikeys_api", "apikey_auth", "reverse_proxy"} {
		if !strings.Contains(string(out), `"handler":"`+handler+`"`) {
			t.Errorf("README's minimal Caddyfile has no %s handler: %s", handler, out)
		}
	}
}
