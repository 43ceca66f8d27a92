// Package guard holds guard-rail tests over the whole source tree: rules about
// the code's shape that a compiler does not check.
package guard
