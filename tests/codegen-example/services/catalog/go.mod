module catalog

go 1.21

require github.com/graphql-go/graphql v0.8.1
