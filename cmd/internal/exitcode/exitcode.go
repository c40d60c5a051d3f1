// Package exitcode is how the project's commands end: 0 ok, 1 a runtime
// failure, 2 a usage or configuration error, each error printed once.
package exitcode

import (
	"errors"
	"fmt"
	"io"
)

// Usage is a usage or configuration problem: exit code 2.
type Usage struct{ Err error }

func (e Usage) Error() string { return e.Err.Error() }
func (e Usage) Unwrap() error { return e.Err }

// Usagef makes a Usage error.
func Usagef(format string, a ...any) error { return Usage{fmt.Errorf(format, a...)} }

// Silent carries an exit code whose message was already printed.
type Silent struct{ Code int }

func (e Silent) Error() string { return fmt.Sprintf("exit %d", e.Code) }

// Of maps a command's error to its exit code, printing it to stderr after
// the program's name.
func Of(err error, program string, stderr io.Writer) int {
	var silent Silent
	var usage Usage
	switch {
	case err == nil:
		return 0
	case errors.As(err, &silent):
		return silent.Code
	case errors.As(err, &usage):
		fmt.Fprintln(stderr, program+":", err)
		return 2
	default:
		fmt.Fprintln(stderr, program+":", err)
		return 1
	}
}
