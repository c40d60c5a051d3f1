package parcel

import "errors"

// The UPU S9 receptacle identifier: 29 characters, no check digit, printed
// on the receptacle label (a bag or a tray of mail between two offices of
// exchange):
//
//	positions  field
//	 1–6       origin office of exchange (IMPC code)
//	 7–12      destination office of exchange
//	13         mail category
//	14         mail class
//	15         mail subclass (with the class, the UPU's two-character subclass code)
//	16         last digit of the year
//	17–20      dispatch serial number
//	21–23      receptacle serial number
//	24         highest receptacle number indicator (1 yes, 0 no, 9 not given)
//	25         registered or insured contents indicator (1, 0, 9)
//	26–29      gross weight in units of 0.1 kg (9999: 999.9 kg or more)
//
// Positions 1–20 are the S8 dispatch identifier. An office of exchange is
// an ISO 3166-1 alpha-2 country, a three-character location and one
// qualifier character: only the country is checked against a list.
const s9Len = 29

// Reasons an S9-shaped code is invalid, in the order Classify checks them
// (the first that fails is the reason). format goes first: a letter where
// the S9 has a digit means the label was not printed as an S9, and the
// fields cannot be read further.
const (
	ReasonOrigin      = "origin"      // S9 origin office of exchange: not an assigned ISO 3166-1 country
	ReasonDestination = "destination" // S9 destination office of exchange: not an assigned ISO 3166-1 country
	ReasonCategory    = "category"    // S9 mail category is not A, B, C or D
	ReasonMailClass   = "mail_class"  // S9 mail class is not one of s9Classes
	ReasonDispatch    = "dispatch"    // S9 dispatch serial number 0000 (they run from 0001)
	ReasonSerial      = "serial"      // S9 receptacle serial number 000 (they run from 001)
	ReasonIndicator   = "indicator"   // S9 highest-receptacle or registered indicator not 0, 1 or 9
)

// s9Categories are the mail categories (position 13).
var s9Categories = [...]struct{ code, meaning string }{
	{"A", "airmail or priority"},
	{"B", "S.A.L. (surface air lifted) or non-priority"},
	{"C", "surface or non-priority"},
	{"D", "priority by surface"},
}

// s9Classes are the mail classes (position 14). The one list: a class the
// UPU adds is added here, and to the class enum of docs/schemas/scan.json.
var s9Classes = [...]struct{ code, meaning string }{
	{"U", "letter post"},
	{"C", "parcels"},
	{"E", "EMS"},
	{"T", "empty receptacles"},
}

// Indicator is an S9 yes/no field that a label may leave unstated (the
// digit 9). The zero value is IndicatorNotGiven.
type Indicator int8

// Indicator values, with the digit each stands for.
const (
	IndicatorNotGiven Indicator = iota // 9
	IndicatorNo                        // 0
	IndicatorYes                       // 1
)

// Bool returns the indicator as a boolean, and whether it was given.
func (i Indicator) Bool() (value, given bool) {
	return i == IndicatorYes, i != IndicatorNotGiven
}

// S9 is a UPU S9 receptacle identifier, decoded. The strings are parts of
// the code (no copies).
type S9 struct {
	Origin      string // origin office of exchange, 6 characters (IMPC code)
	Destination string // destination office of exchange, 6 characters
	Category    string // mail category: A, B, C or D
	Class       string // mail class: U, C, E or T
	Subclass    string // mail subclass: one letter or digit
	Year        int    // the last digit of the year, 0–9
	// Dispatch is the S8 dispatch identifier the receptacle belongs to:
	// the code's first 20 characters.
	Dispatch string
	Serial   int // receptacle serial number, 1–999
	// Highest says the receptacle is the last (highest-numbered) of its
	// dispatch; Registered, that it holds registered or insured items.
	Highest, Registered Indicator
	// DeclaredGrams is the gross weight on the label, in grams (a
	// multiple of 100). 999900 stands for 999.9 kg or more.
	DeclaredGrams int64
}

// ErrNotS9 is ParseS9's error for a code that is not shaped like an S9
// receptacle identifier (Classify gives it another kind).
var ErrNotS9 = errors.New("not a UPU S9 receptacle identifier")

// S9Error is ParseS9's error for an S9-shaped code with a field that
// fails; Reason is the reason Classify gives.
type S9Error struct{ Reason string }

func (e *S9Error) Error() string { return "invalid UPU S9 receptacle identifier: " + e.Reason }

// ParseS9 decodes a UPU S9 receptacle identifier. It succeeds exactly when
// Classify(code, aim) is a valid KindS9, whatever the AIM; else the error
// is ErrNotS9 (another kind) or an *S9Error with Classify's reason.
func ParseS9(code string) (S9, error) {
	if !isS9(code) {
		return S9{}, ErrNotS9
	}
	s, reason := parseS9(code)
	if reason != "" {
		return S9{}, &S9Error{Reason: reason}
	}
	return s, nil
}

// isS9 reports whether s is shaped like an S9: 29 upper-case letters and
// digits, with letters where the two countries (positions 1–2 and 7–8),
// the mail category (13) and the mail class (14) are. What else each
// position holds decides validity, not the kind: a letter among the
// digits is format, an unknown country origin or destination.
func isS9(s string) bool {
	if len(s) != s9Len {
		return false
	}
	for i := range len(s) {
		c := s[i]
		switch i {
		case 0, 1, 6, 7, 12, 13:
			if !isUpper(c) {
				return false
			}
		default:
			if !isUpper(c) && !isDigit(c) {
				return false
			}
		}
	}
	return true
}

// parseS9 decodes an S9-shaped code, or says why it is invalid.
func parseS9(s string) (S9, string) {
	if !allDigits(s[15:]) {
		return S9{}, ReasonFormat
	}
	switch {
	case !ValidCountry(s[0:2]):
		return S9{}, ReasonOrigin
	case !ValidCountry(s[6:8]):
		return S9{}, ReasonDestination
	case !inTable(s9Categories[:], s[12:13]):
		return S9{}, ReasonCategory
	case !inTable(s9Classes[:], s[13:14]):
		return S9{}, ReasonMailClass
	}
	dispatch, serial := atoi(s[16:20]), atoi(s[20:23])
	highest, hok := indicator(s[23])
	registered, rok := indicator(s[24])
	switch {
	case dispatch == 0:
		return S9{}, ReasonDispatch
	case serial == 0:
		return S9{}, ReasonSerial
	case !hok || !rok:
		return S9{}, ReasonIndicator
	}
	return S9{
		Origin: s[0:6], Destination: s[6:12], Category: s[12:13], Class: s[13:14], Subclass: s[14:15],
		Year: int(s[15] - '0'), Dispatch: s[:20], Serial: serial, Highest: highest, Registered: registered,
		DeclaredGrams: int64(atoi(s[25:29])) * 100,
	}, ""
}

func classifyS9(s string) Result {
	if _, reason := parseS9(s); reason != "" {
		return invalid(KindS9, reason)
	}
	return Result{Kind: KindS9, Valid: true}
}

func indicator(c byte) (Indicator, bool) {
	switch c {
	case '0':
		return IndicatorNo, true
	case '1':
		return IndicatorYes, true
	case '9':
		return IndicatorNotGiven, true
	}
	return IndicatorNotGiven, false
}

func inTable(t []struct{ code, meaning string }, code string) bool {
	for _, e := range t {
		if e.code == code {
			return true
		}
	}
	return false
}

// atoi converts a short string of ASCII digits (checked by the caller).
func atoi(s string) int {
	n := 0
	for i := range len(s) {
		n = n*10 + int(s[i]-'0')
	}
	return n
}

func isUpper(c byte) bool { return c >= 'A' && c <= 'Z' }
