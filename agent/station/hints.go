package station

import (
	"github.com/scanagent/scanagent/devices"
)

func scaleHint(result string) string {
	switch result {
	case devices.ErrGarbage.Reason:
		return "bytes that are not this protocol: check baud rate, data bits, parity and scale.protocol"
	case devices.ErrChecksum.Reason:
		return "checksum mismatch: line noise, or wrong parity or data bits"
	case devices.ResultTimeout:
		return "the scale did not answer a poll: check the cable, the scale's interface setting and scale.protocol"
	case devices.ErrDevice.Reason:
		return "the scale reported an error, or did not understand the request: check scale.protocol and the scale's display"
	case devices.ErrUnit.Reason:
		return "a unit the agent cannot convert to grams: set the scale to g, kg, lb or oz"
	}
	return ""
}

func rejectHint(reason string) string {
	switch reason {
	case devices.RejectControl:
		return "control characters in the data: check baud rate, data bits and parity against the scanner, or set scanner.control_chars: strip"
	case devices.RejectUTF8:
		return "invalid UTF-8: check baud rate, data bits and parity against the scanner"
	case devices.RejectOverlong:
		return "no terminator seen within max_length: check scanner.terminator against the scanner's suffix"
	case devices.RejectStale:
		return "a partial read was never terminated: check scanner.terminator, and the baud rate (a wrong one garbles the terminator too)"
	}
	return ""
}
