package config

import (
	"fmt"
	"io"
	"reflect"
	"sort"
	"strings"
	"time"
)

// Describe writes one line per setting of the struct v (its defaults): the
// dotted YAML key, the default and the `help` struct tag. It is what --help
// prints under "Settings".
func Describe(w io.Writer, v any) {
	describe(w, "", reflect.ValueOf(v))
}

func describe(w io.Writer, prefix string, v reflect.Value) {
	for v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name := strings.Split(f.Tag.Get("yaml"), ",")[0]
		if name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		key := prefix + name
		fv := v.Field(i)
		if fv.Kind() == reflect.Struct && fv.Type() != reflect.TypeOf(time.Time{}) {
			describe(w, key+".", fv)
			continue
		}
		if fv.Kind() == reflect.Slice && fv.Type().Elem().Kind() == reflect.Struct {
			// A list of sections: document each field of one entry, with the
			// first default entry's values.
			fmt.Fprintf(w, "  %-34s %s (default: %d entries, the first shown below)\n", key, f.Tag.Get("help"), fv.Len())
			elem := reflect.New(fv.Type().Elem()).Elem()
			if fv.Len() > 0 {
				elem = fv.Index(0)
			}
			describe(w, key+"[].", elem)
			continue
		}
		fmt.Fprintf(w, "  %-34s %s (default: %s)\n", key, f.Tag.Get("help"), show(fv))
	}
}

func show(v reflect.Value) string {
	switch x := v.Interface().(type) {
	case time.Duration:
		return x.String()
	case fmt.Stringer:
		return x.String()
	case string:
		if x == "" {
			return `""`
		}
		return x
	}
	if v.Kind() == reflect.Slice && v.Len() == 0 {
		return "[]"
	}
	if v.Kind() == reflect.Map {
		keys := v.MapKeys()
		parts := make([]string, 0, len(keys))
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("%v: %v", k.Interface(), v.MapIndex(k).Interface()))
		}
		sort.Strings(parts)
		return "{" + strings.Join(parts, ", ") + "}"
	}
	return fmt.Sprint(v.Interface())
}
