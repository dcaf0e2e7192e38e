package httpapi_test

import (
	"encoding/json"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"

	"github.com/livenessq/livenessq/httpapi"
)

// openAPIOperations returns "METHOD path" for every operation of the document.
func openAPIOperations(t *testing.T) (ops []string, doc map[string]any) {
	t.Helper()
	require.NoError(t, json.Unmarshal(httpapi.OpenAPI(), &doc))
	require.True(t, strings.HasPrefix(doc["openapi"].(string), "3."), "not an OpenAPI 3 document")
	paths := doc["paths"].(map[string]any)
	for path, item := range paths {
		for method := range item.(map[string]any) {
			switch method {
			case "get", "put", "post", "delete", "options", "head", "patch", "trace":
				ops = append(ops, strings.ToUpper(method)+" "+path)
			}
		}
	}
	sort.Strings(ops)
	return ops, doc
}

// TestOpenAPIMatchesRoutes: every route the server registers is in openapi.json, with
// its operationId and security, and every operation of the document is a route.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	t.Parallel()
	ops, doc := openAPIOperations(t)
	var routes []string
	for _, rt := range httpapi.Routes() {
		routes = append(routes, rt.Method+" "+rt.OpenAPIPath())
	}
	sort.Strings(routes)
	if diff := cmp.Diff(ops, routes); diff != "" {
		t.Fatalf("openapi.json operations (-) and server routes (+) differ:\n%s", diff)
	}
	paths := doc["paths"].(map[string]any)
	for _, rt := range httpapi.Routes() {
		op := paths[rt.OpenAPIPath()].(map[string]any)[strings.ToLower(rt.Method)].(map[string]any)
		require.Equal(t, rt.Name, op["operationId"], "operationId of %s %s", rt.Method, rt.Pattern)
		sec, hasSec := op["security"]
		public := hasSec && len(sec.([]any)) == 0
		require.Equal(t, rt.Public, public, "security of %s %s", rt.Method, rt.Pattern)
		responses := op["responses"].(map[string]any)
		if !rt.Public {
			require.Contains(t, responses, "401", "%s %s documents no 401", rt.Method, rt.Pattern)
			require.Contains(t, responses, "429", "%s %s documents no 429", rt.Method, rt.Pattern)
		}
	}
}

// TestOpenAPIReferencesResolve: every $ref in the document names something it defines.
func TestOpenAPIReferencesResolve(t *testing.T) {
	t.Parallel()
	_, doc := openAPIOperations(t)
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if ref, ok := v["$ref"].(string); ok {
				require.True(t, strings.HasPrefix(ref, "#/"), "external $ref %q", ref)
				var cur any = doc
				for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
					m, ok := cur.(map[string]any)
					require.True(t, ok, "$ref %q does not resolve", ref)
					cur, ok = m[part]
					require.True(t, ok, "$ref %q does not resolve", ref)
				}
			}
			for _, x := range v {
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(doc)
}
