// Package parcel classifies and validates parcel identifiers (UPU S10, UPU
// S9 receptacles, Russian Post 14-digit, GS1 SSCC/GTIN and GS1 element
// strings) read by a
// barcode scanner. The agent's scan pipeline calls Classify once per scan and
// copies the Result into the scan event's kind, valid and reason fields.
//
// The package is pure: no I/O and no package-level mutable state.
//
// Codes are taken exactly as the scanner sent them. Nothing is trimmed or
// upper-cased: "rr473124829gb" or " RR473124829GB" is KindOther, because an
// identifier silently repaired here would no longer match the label, and a
// scanner that adds padding is misconfigured. Fix that at the scanner or in
// the framing layer.
package parcel

import "strings"

// Kind is the identifier family of a scanned code.
type Kind string

// Kinds, as written in the scan event's "kind" field.
const (
	KindS10   Kind = "s10"   // UPU S10 item identifier
	KindS9    Kind = "s9"    // UPU S9 receptacle identifier (s9.go)
	KindRU14  Kind = "ru14"  // Russian Post domestic 14-digit identifier
	KindGS1   Kind = "gs1"   // GS1 keys (SSCC, GTIN) and GS1 element strings
	KindOther Kind = "other" // anything else; carries no validation
)

// Reasons (machine-readable) why a code of a known kind is invalid. Each
// invalid Result carries exactly one reason. See Classify for which one wins.
const (
	ReasonCheckDigit       = "check_digit"       // check digit does not match
	ReasonServiceIndicator = "service_indicator" // S10 service indicator starts with a reserved letter
	ReasonCountry          = "country"           // S10 country is not an assigned ISO 3166-1 alpha-2 code
	ReasonFormat           = "format"            // malformed for its kind (GS1; S9: a letter where a digit belongs)
)

// Result is the classification of one scanned code.
type Result struct {
	Kind   Kind
	Valid  bool
	Reason string // empty when Valid
}

// AIM symbology identifiers (ISO/IEC 15424) that decide how a code is read.
const (
	aimGS1128  = "]C1" // GS1-128
	aimGS1DM   = "]d2" // GS1 DataMatrix
	aimGS1QR   = "]Q3" // GS1 QR Code
	aimDataBar = "]e0" // GS1 DataBar
	aimEAN13   = "]E0" // EAN-13, UPC-A (12 or 13 digits)
	aimEAN8    = "]E4" // EAN-8
	aimITF     = "]I1" // Interleaved 2 of 5 with check digit (ITF-14 when 14 digits)
)

const gs = 0x1D // <GS>, how scanners transmit a GS1 FNC1 separator

// Classify decides the kind of a scanned code and validates it. aim is the
// AIM symbology identifier the scanner sent (e.g. "]C0", "]C1", "]E0",
// "]I1", "]d2", "]Q3", "]e0") or "" when unknown. In order:
//
//   - A code shaped exactly like ^[A-Z]{2}\d{9}[A-Z]{2}$ is always KindS10,
//     whatever the AIM. Its reasons, first match wins: check_digit, then
//     service_indicator (first letter J, K, S, T or W), then country. The
//     check digit goes first because it is the only part with an integrity
//     check: when it fails the read itself is suspect and the remedy is to
//     rescan. The other two are faults of the printed label and do not go
//     away on a rescan.
//   - A code shaped like a UPU S9 receptacle identifier (29 upper-case
//     letters and digits, letters at positions 1–2, 7–8, 13 and 14: see
//     isS9) is always KindS9, whatever the AIM. Its reasons, first match
//     wins: format (a letter in positions 16–29), origin, destination,
//     category, mail_class, dispatch, serial, indicator (s9.go). No other
//     kind has that shape (GS1 keys and AIs start with digits), so it takes
//     no code from another kind but other.
//   - With a GS1 AIM (]C1, ]d2, ]Q3, ]e0) the code is a GS1 element string
//     (FNC1 as <GS>, or the bracketed form "(00)..."): KindGS1, invalid with
//     format when it does not parse, else with check_digit when an AI 00/01/02
//     key fails its mod-10 check.
//   - With ]E0 (12 or 13 digits) or ]E4 (8 digits) the code is a GTIN:
//     KindGS1, format when the length or characters are wrong. With ]I1 a
//     14-digit code is a GTIN-14; other ]I1 codes are treated like any other
//     non-GS1 symbology.
//   - 14 digits are KindRU14 (GS1 mod-10 check). Without an AIM a GTIN-14
//     cannot be told apart from a Russian Post code, and RU14 wins.
//   - Without an AIM only: 18 digits are an SSCC and 8, 12 or 13 digits a
//     GTIN (KindGS1, mod-10 check). GS1 keys are only carried by GS1
//     symbologies, so such digit strings are not GS1 when the AIM names
//     another symbology (e.g. ]C0 plain Code 128).
//   - Anything else is KindOther, which is always valid.
//
// Classify never panics, whatever the input (empty, invalid UTF-8, huge).
func Classify(code, aim string) Result {
	if isS10(code) {
		return classifyS10(code)
	}
	if isS9(code) {
		return classifyS9(code)
	}
	switch aim {
	case aimGS1128, aimGS1DM, aimGS1QR, aimDataBar:
		return classifyElementString(code)
	case aimEAN13:
		if len(code) != 12 && len(code) != 13 {
			return invalid(KindGS1, ReasonFormat)
		}
		return checked(KindGS1, code)
	case aimEAN8:
		if len(code) != 8 {
			return invalid(KindGS1, ReasonFormat)
		}
		return checked(KindGS1, code)
	case aimITF:
		if len(code) == 14 && allDigits(code) {
			return checked(KindGS1, code)
		}
	}
	if !allDigits(code) {
		return Result{Kind: KindOther, Valid: true}
	}
	switch n := len(code); {
	case n == 14:
		return checked(KindRU14, code)
	case aim == "" && (n == 8 || n == 12 || n == 13 || n == 18):
		return checked(KindGS1, code)
	}
	return Result{Kind: KindOther, Valid: true}
}

func invalid(k Kind, reason string) Result { return Result{Kind: k, Reason: reason} }

// checked validates code whose last digit is a GS1 mod-10 check digit over
// the digits before it. Non-digits or fewer than two characters give format.
func checked(k Kind, code string) Result {
	if len(code) < 2 || !allDigits(code) {
		return invalid(k, ReasonFormat)
	}
	c, _ := Mod10CheckDigit(code[:len(code)-1])
	if c != int(code[len(code)-1]-'0') {
		return invalid(k, ReasonCheckDigit)
	}
	return Result{Kind: k, Valid: true}
}

// isS10 reports whether s has the S10 letter/digit pattern: 2 upper-case
// letters, 9 digits, 2 upper-case letters.
func isS10(s string) bool {
	if len(s) != 13 {
		return false
	}
	for i := range len(s) {
		if i >= 2 && i <= 10 {
			if !isDigit(s[i]) {
				return false
			}
		} else if s[i] < 'A' || s[i] > 'Z' {
			return false
		}
	}
	return true
}

func classifyS10(s string) Result {
	c, _ := S10CheckDigit(s[2:10])
	switch {
	case c != int(s[10]-'0'):
		return invalid(KindS10, ReasonCheckDigit)
	case strings.IndexByte("JKSTW", s[0]) >= 0:
		return invalid(KindS10, ReasonServiceIndicator)
	case !ValidCountry(s[11:]):
		return invalid(KindS10, ReasonCountry)
	}
	return Result{Kind: KindS10, Valid: true}
}

// S10CheckDigit returns the UPU S10 check digit of an 8-digit serial number:
// weights 8,6,4,2,3,5,9,7, C = 11 − (S mod 11), with 10 → 0 and 11 → 5.
// ok is false if serial8 is not exactly 8 ASCII digits.
func S10CheckDigit(serial8 string) (int, bool) {
	if len(serial8) != 8 || !allDigits(serial8) {
		return 0, false
	}
	sum := 0
	for i, w := range [8]int{8, 6, 4, 2, 3, 5, 9, 7} {
		sum += w * int(serial8[i]-'0')
	}
	switch c := 11 - sum%11; c {
	case 10:
		return 0, true
	case 11:
		return 5, true
	default:
		return c, true
	}
}

// Mod10CheckDigit returns the GS1 mod-10 check digit for digits, the digits
// that precede the check digit: counting from the right, digits are weighted
// 3, 1, 3, ...; the check digit is (10 − sum mod 10) mod 10. The Russian Post
// 14-digit code uses the same rule. ok is false if digits is empty or holds
// anything but ASCII digits.
func Mod10CheckDigit(digits string) (int, bool) {
	if digits == "" || !allDigits(digits) {
		return 0, false
	}
	sum := 0
	for i := range len(digits) {
		d := int(digits[len(digits)-1-i] - '0')
		if i%2 == 0 {
			d *= 3
		}
		sum += d
	}
	return (10 - sum%10) % 10, true
}

// classifyElementString validates GS1 element strings, either as
// transmitted (AIs run together, <GS> after each variable-length field, an
// optional leading <GS> for the leading FNC1) or in the human-readable
// bracketed form "(01)09506000134352(10)AB1". The bracketed form cannot carry
// '(' inside a value, although GS1 allows it in some alphanumeric AIs.
func classifyElementString(s string) Result {
	if s != "" && s[0] == gs {
		s = s[1:]
	}
	if s == "" {
		return invalid(KindGS1, ReasonFormat)
	}
	bracketed := s[0] == '('
	reason := ""
	for s != "" {
		var ai, val string
		if bracketed {
			end := strings.IndexByte(s, ')')
			if s[0] != '(' || end < 0 {
				return invalid(KindGS1, ReasonFormat)
			}
			ai, s = s[1:end], s[end+1:]
			if n := aiLen(ai); n == 0 || n != len(ai) {
				return invalid(KindGS1, ReasonFormat)
			}
			n := strings.IndexAny(s, "(\x1d")
			if n < 0 {
				n = len(s)
			}
			val, s = s[:n], s[n:]
			if f := fixedLen(ai); f > 0 && len(val) != f {
				return invalid(KindGS1, ReasonFormat)
			}
		} else {
			n := aiLen(s)
			if n == 0 || len(s) < n {
				return invalid(KindGS1, ReasonFormat)
			}
			ai, s = s[:n], s[n:]
			n = fixedLen(ai)
			if n == 0 { // variable length: ends at <GS> or end of string
				if n = strings.IndexByte(s, gs); n < 0 {
					n = len(s)
				}
			} else if len(s) < n {
				return invalid(KindGS1, ReasonFormat)
			}
			val, s = s[:n], s[n:]
		}
		if s != "" && s[0] == gs { // separator; tolerated after fixed-length fields too
			s = s[1:]
		}
		if !allDigits(ai) || val == "" || fixedLen(ai) > 0 && !allDigits(val) {
			return invalid(KindGS1, ReasonFormat)
		}
		if ai == "00" || ai == "01" || ai == "02" {
			if r := checked(KindGS1, val); !r.Valid {
				reason = r.Reason
			}
		}
	}
	if reason != "" {
		return invalid(KindGS1, reason)
	}
	return Result{Kind: KindGS1, Valid: true}
}

// aiLen returns how many digits the Application Identifier at the start of s
// has, decided by its first two digits, or 0 if they start no known AI.
func aiLen(s string) int {
	if len(s) < 2 || !isDigit(s[0]) || !isDigit(s[1]) {
		return 0
	}
	switch p := int(s[0]-'0')*10 + int(s[1]-'0'); {
	case p <= 4, p >= 10 && p <= 22, p == 30, p == 37, p >= 90:
		return 2
	case p >= 23 && p <= 25, p >= 40 && p <= 42, p == 71:
		return 3
	case p >= 31 && p <= 36, p == 39, p == 43, p == 70, p == 72, p >= 80 && p <= 82:
		return 4
	}
	return 0
}

// fixedLen returns the data length of an AI whose length is predefined by
// its first two digits (GS1 General Specifications, element strings with
// predefined length, which need no FNC1 after them), or 0 for
// variable-length AIs. All predefined-length values are numeric.
func fixedLen(ai string) int {
	switch p := int(ai[0]-'0')*10 + int(ai[1]-'0'); {
	case p == 0:
		return 18 // SSCC
	case p >= 1 && p <= 3:
		return 14 // GTIN
	case p == 4:
		return 16
	case p >= 11 && p <= 19:
		return 6 // dates
	case p == 20:
		return 2
	case p >= 31 && p <= 36:
		return 6 // trade measures
	case p == 41:
		return 13 // GLN
	}
	return 0
}

// ValidCountry reports whether alpha2 is an officially assigned ISO 3166-1
// alpha-2 code (upper case). Exceptionally reserved codes such as UK, EU or
// UN, and user-assigned ones such as XX, are not accepted, even though some
// posts use them.
func ValidCountry(alpha2 string) bool {
	if len(alpha2) != 2 {
		return false
	}
	lo, hi := 0, len(iso3166)/3
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		switch c := iso3166[3*m : 3*m+2]; {
		case c == alpha2:
			return true
		case c < alpha2:
			lo = m + 1
		default:
			hi = m
		}
	}
	return false
}

// iso3166 holds the 249 officially assigned ISO 3166-1 alpha-2 codes, sorted,
// each followed by one space (entry i is iso3166[3*i : 3*i+2]).
const iso3166 = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ " +
	"BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ " +
	"CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ " +
	"DE DJ DK DM DO DZ " +
	"EC EE EG EH ER ES ET " +
	"FI FJ FK FM FO FR " +
	"GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY " +
	"HK HM HN HR HT HU " +
	"ID IE IL IM IN IO IQ IR IS IT " +
	"JE JM JO JP " +
	"KE KG KH KI KM KN KP KR KW KY KZ " +
	"LA LB LC LI LK LR LS LT LU LV LY " +
	"MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ " +
	"NA NC NE NF NG NI NL NO NP NR NU NZ " +
	"OM " +
	"PA PE PF PG PH PK PL PM PN PR PS PT PW PY " +
	"QA " +
	"RE RO RS RU RW " +
	"SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ " +
	"TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ " +
	"UA UG UM US UY UZ " +
	"VA VC VE VG VI VN VU " +
	"WF WS " +
	"YE YT " +
	"ZA ZM ZW "

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func allDigits(s string) bool {
	for i := range len(s) {
		if !isDigit(s[i]) {
			return false
		}
	}
	return true
}
