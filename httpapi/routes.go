package httpapi

import (
	"slices"
	"strings"
)

// Route is one operation of the API: a method and a path pattern of http.ServeMux
// (Go 1.22+ wildcards; "{key...}" matches the rest of the path, slashes included).
type Route struct {
	Method string
	// Pattern is the path pattern, e.g. "/v1/results/{key...}".
	Pattern string
	// Name is the operation's operationId in the OpenAPI document.
	Name string
	// Public routes need no bearer token.
	Public bool
}

// OpenAPIPath returns the route's path as the OpenAPI document writes it: "{key...}"
// becomes "{key}".
func (r Route) OpenAPIPath() string { return strings.ReplaceAll(r.Pattern, "...}", "}") }

// routeTable is the API. The server registers exactly these routes, and a test checks
// them against openapi.json both ways.
var routeTable = []Route{
	{Method: "POST", Pattern: "/v1/verifications", Name: "createVerification"},
	{Method: "POST", Pattern: "/v1/batches", Name: "createBatch"},
	{Method: "GET", Pattern: "/v1/batches/{id}", Name: "getBatch"},
	{Method: "GET", Pattern: "/v1/batches/{id}/results", Name: "getBatchResults"},
	{Method: "GET", Pattern: "/v1/results/{key...}", Name: "getResult"},
	{Method: "GET", Pattern: "/v1/openapi.json", Name: "getOpenAPI", Public: true},
	{Method: "GET", Pattern: "/healthz", Name: "getHealth", Public: true},
}

// Routes returns every route the server registers.
func Routes() []Route { return slices.Clone(routeTable) }
