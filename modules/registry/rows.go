package registry

import "fmt"

// Scanner is one row of a query's result: database/sql's *sql.Row and
// *sql.Rows and pgx's Row and Rows all have it, so that a store decodes a
// row the same way whichever query produced it.
type Scanner interface {
	Scan(dest ...any) error
}

// CollectRows decodes every row of rows (see Rows, in admin.go) with scan, in order. what names
// the query in errors. The caller still closes rows.
func CollectRows[T any](rows Rows, what string, scan func(Scanner) (T, error)) ([]T, error) {
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return out, nil
}
