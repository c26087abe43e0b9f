// Package audit holds the shape of the audit log's events, written by
// the owners' API, the operators' operations and the leak handler alike.
package audit

import (
	"go.uber.org/zap"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// OwnerFields are an event's fields for owner: the name and, apart, its
// source, followed by fields.
func OwnerFields(o keystore.Owner, fields ...zap.Field) []zap.Field {
	out := make([]zap.Field, 0, 2+len(fields)) // one allocation, as the logger keeps them
	return append(append(out, zap.String("user", o.Name), zap.String("source", o.Source)), fields...)
}
