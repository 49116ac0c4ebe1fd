// A tiny GraphQL server with graphql-go/graphql: POST /graphql on 127.0.0.1:$PORT, answering the
// standard introspection query; not a federation subgraph (no `_service`). graphql-go keeps a
// field's arguments in a Go map, so their order changes from one start to the next: every field
// here takes one argument, so that the schema it serves is the same on every start.
package main

import (
	"encoding/json"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"

	"github.com/graphql-go/graphql"
)

var items = []map[string]interface{}{
	{"sku": "b-1", "title": "The Go Programming Language", "category": "books", "tags": []string{"go"}},
	{"sku": "g-1", "title": "Go (the board game)", "category": "games", "tags": []string{}},
}

func schema() (graphql.Schema, error) {
	category := graphql.NewEnum(graphql.EnumConfig{
		Name:        "Category",
		Description: "Where an item is shelved.",
		Values: graphql.EnumValueConfigMap{
			"BOOKS": &graphql.EnumValueConfig{Value: "books"},
			"GAMES": &graphql.EnumValueConfig{Value: "games", DeprecationReason: "sold out for good"},
		},
	})
	item := graphql.NewObject(graphql.ObjectConfig{
		Name:        "Item",
		Description: "An item in the catalog.",
		Fields: graphql.Fields{
			"sku":      &graphql.Field{Type: graphql.NewNonNull(graphql.ID)},
			"title":    &graphql.Field{Type: graphql.NewNonNull(graphql.String), Description: "What the shelf label says."},
			"category": &graphql.Field{Type: category},
			"tags":     &graphql.Field{Type: graphql.NewNonNull(graphql.NewList(graphql.NewNonNull(graphql.String)))},
		},
	})
	list := graphql.NewNonNull(graphql.NewList(graphql.NewNonNull(item)))
	query := graphql.NewObject(graphql.ObjectConfig{
		Name: "Query",
		Fields: graphql.Fields{
			"item": &graphql.Field{Type: item,
				Args: graphql.FieldConfigArgument{"sku": &graphql.ArgumentConfig{Type: graphql.NewNonNull(graphql.ID)}},
				Resolve: func(p graphql.ResolveParams) (interface{}, error) {
					for _, it := range items {
						if it["sku"] == p.Args["sku"] {
							return it, nil
						}
					}
					return nil, nil
				}},
			"items": &graphql.Field{Type: list,
				Args: graphql.FieldConfigArgument{"first": &graphql.ArgumentConfig{Type: graphql.Int, DefaultValue: 10}},
				Resolve: func(p graphql.ResolveParams) (interface{}, error) {
					return items[:min(len(items), max(0, p.Args["first"].(int)))], nil
				}},
		},
	})
	return graphql.NewSchema(graphql.SchemaConfig{Query: query})
}

type request struct {
	Query         string                 `json:"query"`
	OperationName string                 `json:"operationName"`
	Variables     map[string]interface{} `json:"variables"`
}

func main() {
	s, err := schema()
	if err != nil {
		log.Fatal(err)
	}
	http.HandleFunc("/graphql", func(w http.ResponseWriter, r *http.Request) {
		var req request
		if r.Method != http.MethodPost || json.NewDecoder(r.Body).Decode(&req) != nil {
			http.Error(w, "POST a JSON GraphQL request", http.StatusBadRequest)
			return
		}
		res := graphql.Do(graphql.Params{Schema: s, RequestString: req.Query, OperationName: req.OperationName,
			VariableValues: req.Variables, Context: r.Context()})
		w.Header().Set("Content-Type", "application/json")
		if res.HasErrors() && res.Data == nil { // a query that does not validate (e.g. `_service`)
			w.WriteHeader(http.StatusBadRequest)
		}
		_ = json.NewEncoder(w).Encode(res)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:"+os.Getenv("PORT"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("catalog: listening on %s\n", ln.Addr()) // the line a test waits for
	log.Fatal(http.Serve(ln, nil))
}
