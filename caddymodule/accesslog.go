package caddymodule

import (
	"net/http"
	"reflect"
	"strings"
	"unsafe"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/logging"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Caddy's access log records each request as it arrived, before any
// handler runs, with every header except Authorization, Cookie and a few
// others (unless should_log_credentials is on); its error log records the
// same for every request that ended in an error (4xx at DEBUG, 5xx at
// ERROR), whether access logging is on or not. So a key that apikey_auth
// reads from any other header, or from the query string, lands in those
// logs unless a log filter removes it.
//
// warnUnfilteredKeys looks, when the config starts, at every server, at
// the apikey_auth handlers in its routes and at the logs its access and
// error loggers write to, and warns once per server and field that some
// log would record unfiltered.
func (a *App) warnUnfilteredKeys() {
	v, err := a.ctx.AppIfConfigured("http")
	if err != nil {
		return
	}
	httpApp, ok := v.(*caddyhttp.App)
	if !ok {
		return
	}
	logs, ok := configuredLogs(a.ctx)
	if !ok {
		a.logger.Debug("cannot inspect the logging config; not checking logs for API keys")
		return
	}
	for name, srv := range httpApp.Servers {
		warned := make(map[string]bool)
		logsCredentials := srv.Logs != nil && srv.Logs.ShouldLogCredentials
		forEachGate(append(srv.Routes, errorRoutes(srv)...), func(p *APIKeyGate) {
			for _, field := range keyFields(p, logsCredentials) {
				if warned[field.path] {
					continue
				}
				for _, logger := range requestLoggerNames(srv.Logs) {
					if log, bad := unfilteredIn(logs, logger, field); bad {
						warned[field.path] = true
						a.logger.Warn("a log records API keys in clear: add a log filter for this field, e.g. `log { format filter { "+field.example+" } }`",
							zap.String("server", name),
							zap.String("field", field.path),
							zap.String("logger", logger),
							zap.String("log", log))
						break
					}
				}
			}
		})
	}
}

// keyField is a place in an access log entry where a key may be.
type keyField struct {
	path    string // the field's path, as log filters name it
	param   string // for the query: the parameter
	example string // the filter that removes it, in Caddyfile syntax
}

// keyFields lists where the access log would show p's keys.
func keyFields(p *APIKeyGate, logsCredentials bool) []keyField {
	var fields []keyField
	header := func(h string) keyField {
		path := "request>headers>" + http.CanonicalHeaderKey(h)
		return keyField{path: path, example: path + " delete"}
	}
	if logsCredentials {
		fields = append(fields, header("Authorization"))
	}
	for _, h := range p.Headers {
		fields = append(fields, header(h))
	}
	if p.QueryParam != "" {
		fields = append(fields, keyField{path: "request>uri", param: p.QueryParam,
			example: "request>uri query { delete " + p.QueryParam + " }"})
	}
	return fields
}

func errorRoutes(srv *caddyhttp.Server) caddyhttp.RouteList {
	if srv.Errors == nil {
		return nil
	}
	return srv.Errors.Routes
}

// forEachGate calls fn for each apikey_auth handler in routes, at any
// depth of subroutes.
func forEachGate(routes caddyhttp.RouteList, fn func(*APIKeyGate)) {
	for _, rt := range routes {
		for _, h := range rt.Handlers {
			switch h := h.(type) {
			case *APIKeyGate:
				fn(h)
			case *caddyhttp.Subroute:
				forEachGate(h.Routes, fn)
				if h.Errors != nil {
					forEachGate(h.Errors.Routes, fn)
				}
			}
		}
	}
}

// requestLoggerNames are the names of the loggers that write a server's
// requests: its access loggers (when access logging is on) and its error
// loggers.
func requestLoggerNames(slc *caddyhttp.ServerLogConfig) []string {
	if slc == nil {
		return []string{"http.log.error"}
	}
	var names []string
	add := func(n string) {
		for _, kind := range []string{"http.log.access", "http.log.error"} {
			if n != "" {
				kind += "." + n
			}
			names = append(names, kind)
		}
	}
	if !slc.SkipUnmappedHosts {
		add(slc.DefaultLoggerName)
	}
	for _, ns := range slc.LoggerNames {
		for _, n := range ns {
			add(n)
		}
	}
	return names
}

// unfilteredIn returns the name of a log that records entries of logger
// without removing field, if there is one.
func unfilteredIn(logs map[string]*caddy.CustomLog, logger string, field keyField) (string, bool) {
	if _, ok := logs[caddy.DefaultLoggerName]; !ok {
		// Caddy's own default log takes every logger, unfiltered.
		return caddy.DefaultLoggerName, true
	}
	for name, cl := range logs {
		if !loggerAllowed(cl, logger) {
			continue
		}
		fe, ok := logEncoder(cl).(*logging.FilterEncoder)
		if !ok || !removes(fe, field) {
			return name, true
		}
	}
	return "", false
}

// removes reports whether fe deletes, replaces or hashes field.
func removes(fe *logging.FilterEncoder, field keyField) bool {
	// A filter on the field or on any field that contains it.
	for path := field.path; path != ""; {
		if hides(fe.Fields[path]) {
			return true
		}
		i := strings.LastIndexByte(path, '>')
		if i < 0 {
			break
		}
		path = path[:i]
	}
	if field.param == "" {
		return false
	}
	q, ok := fe.Fields[field.path].(*logging.QueryFilter)
	if !ok {
		return false
	}
	for _, a := range q.Actions {
		switch string(a.Type) {
		case "delete", "replace", "hash":
			if a.Parameter == field.param {
				return true
			}
		}
	}
	return false
}

func hides(f logging.LogFieldFilter) bool {
	switch f.(type) {
	case logging.DeleteFilter, *logging.DeleteFilter, *logging.HashFilter, *logging.ReplaceFilter:
		return true
	}
	return false
}

// loggerAllowed is caddy.CustomLog's rule for which loggers a log takes
// (the longest matching include or exclude namespace wins).
func loggerAllowed(cl *caddy.CustomLog, name string) bool {
	if len(cl.Include) == 0 && len(cl.Exclude) == 0 {
		return true
	}
	name += "."
	var accept, reject int
	for _, ns := range cl.Include {
		if strings.HasPrefix(name, ns+".") && len(ns) > accept {
			accept = len(ns)
		}
	}
	if len(cl.Include) > 0 && accept == 0 {
		return false
	}
	for _, ns := range cl.Exclude {
		if ns == "*" {
			return false
		}
		if strings.HasPrefix(name, ns+".") && len(ns) > reject {
			reject = len(ns)
		}
	}
	return accept > reject || (len(cl.Include) == 0 && reject == 0)
}

// configuredLogs returns the logs of the config ctx belongs to. Caddy
// gives modules no access to the logging config, so it is read from the
// context's unexported config field, checked by type (Caddy is pinned);
// ok is false if that fails.
func configuredLogs(ctx caddy.Context) (map[string]*caddy.CustomLog, bool) {
	f := reflect.ValueOf(&ctx).Elem().FieldByName("cfg")
	if !f.IsValid() || f.Type() != reflect.TypeFor[*caddy.Config]() {
		return nil, false
	}
	cfg := *(**caddy.Config)(unsafe.Pointer(f.UnsafeAddr()))
	if cfg == nil || cfg.Logging == nil {
		return nil, cfg != nil
	}
	return cfg.Logging.Logs, true
}

// logEncoder returns the encoder a provisioned log writes with (nil if
// it cannot be read), from its unexported field, checked by type.
func logEncoder(cl *caddy.CustomLog) zapcore.Encoder {
	f := reflect.ValueOf(&cl.BaseLog).Elem().FieldByName("encoder")
	if !f.IsValid() || f.Type() != reflect.TypeFor[zapcore.Encoder]() {
		return nil
	}
	return *(*zapcore.Encoder)(unsafe.Pointer(f.UnsafeAddr()))
}
