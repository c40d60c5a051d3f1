package parcel

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestClassifyS9(t *testing.T) {
	ok := func(k Kind) Result { return Result{Kind: k, Valid: true} }
	bad := func(r string) Result { return Result{Kind: KindS9, Reason: r} }
	other := ok(KindOther)
	const base = "BEBRUABOLPBBAEN60073003000227"
	// at replaces the characters of base from position pos (1-based, as
	// the S9 counts them).
	at := func(pos int, s string) string { return base[:pos-1] + s + base[pos-1+len(s):] }
	tests := []struct {
		code, aim string
		want      Result
	}{
		{base, "", ok(KindS9)},
		{base, "]C0", ok(KindS9)},
		{base, "]C1", ok(KindS9)}, // shape wins over any AIM, as for S10
		{"INBOMAJPKWSAAUY60597001100039", "]C0", ok(KindS9)},
		{at(13, "BCE"), "", ok(KindS9)},       // S.A.L. parcels
		{at(13, "CTA"), "", ok(KindS9)},       // surface, empty receptacles
		{at(13, "DU"), "", ok(KindS9)},        // priority by surface, letter post
		{at(3, "BR1"), "", ok(KindS9)},        // location and qualifier: letters or digits
		{at(6, "1"), "", ok(KindS9)},          // a digit qualifier
		{at(9, "L0B2"), "", ok(KindS9)},       // in the destination too
		{at(15, "7"), "", ok(KindS9)},         // subclass: a letter or a digit
		{at(21, "999999999"), "", ok(KindS9)}, // serial 999, indicators not given, 999.9 kg or more
		{at(17, "9999"), "", ok(KindS9)},
		{at(26, "0000"), "", ok(KindS9)}, // no weight is not checked
		{at(16, "0"), "", ok(KindS9)},

		// format: a letter where a digit belongs
		{at(29, "O"), "", bad(ReasonFormat)},
		{at(16, "X"), "", bad(ReasonFormat)},
		{at(17, "OO73"), "", bad(ReasonFormat)},
		{at(21, "A"), "", bad(ReasonFormat)},
		{at(24, "Y"), "", bad(ReasonFormat)},
		// origin, destination: the country
		{at(1, "XX"), "", bad(ReasonOrigin)},
		{at(1, "UK"), "", bad(ReasonOrigin)}, // exceptionally reserved, as for S10
		{at(7, "XX"), "", bad(ReasonDestination)},
		{at(7, "EU"), "", bad(ReasonDestination)},
		// category, class
		{at(13, "E"), "", bad(ReasonCategory)},
		{at(13, "Z"), "", bad(ReasonCategory)},
		{at(14, "X"), "", bad(ReasonMailClass)},
		{at(14, "A"), "", bad(ReasonMailClass)},
		// dispatch, serial, indicators
		{at(17, "0000"), "", bad(ReasonDispatch)},
		{at(21, "000"), "", bad(ReasonSerial)},
		{at(24, "2"), "", bad(ReasonIndicator)},
		{at(25, "5"), "", bad(ReasonIndicator)},
		// first that fails wins: format, origin, destination, category,
		// mail_class, dispatch, serial, indicator
		{"XXBRUAXXLPBBZXN6000000055022O", "", bad(ReasonFormat)},
		{"XXBRUAXXLPBBZXN60000000550227", "", bad(ReasonOrigin)},
		{"BEBRUAXXLPBBZXN60000000550227", "", bad(ReasonDestination)},
		{"BEBRUABOLPBBZXN60000000550227", "", bad(ReasonCategory)},
		{"BEBRUABOLPBBAXN60000000550227", "", bad(ReasonMailClass)},
		{"BEBRUABOLPBBAEN60000000550227", "", bad(ReasonDispatch)},
		{"BEBRUABOLPBBAEN60001000550227", "", bad(ReasonSerial)},
		{"BEBRUABOLPBBAEN60001001550227", "", bad(ReasonIndicator)},

		// not S9-shaped: what it was before
		{strings.ToLower(base), "", other},
		{base[:28], "", other},
		{base + "0", "", other},
		{" " + base[1:], "", other},
		{base[:28] + "\r", "", other},
		{at(1, "1"), "", other},  // a digit in a country
		{at(8, "1"), "", other},  // the same in the destination
		{at(13, "1"), "", other}, // a digit for the category
		{at(14, "1"), "", other}, // a digit for the class
		{at(4, "-"), "", other},
		{at(20, "-"), "", other},
		{at(5, "é"), "", other},
		{strings.Repeat("1", 29), "", other},
		{strings.Repeat("A", 29), "", bad(ReasonFormat)}, // S9-shaped: letters may stand anywhere but in 16–29
		{"0109506000134352" + "10ABCDEFGHIJK", "]C1", ok(KindGS1)},
		{"(01)09506000134352(10)ABC123", "]C1", ok(KindGS1)},
		{"0109506000134352" + "10ABCDEFGHIJK", "", other},
		{"0109506000134352" + "10ABCDEFGHIJK", "]C0", other},
		{strings.Repeat("1", 29), "]C1", Result{Kind: KindGS1, Reason: ReasonFormat}}, // AI 11 is 6 digits, then AI 11 ... then too short
		{"ABCDEFGHIJKLMNOPQRSTUVWXYZ-12", "", other},
	}
	for _, tt := range tests {
		if len(tt.code) != 29 && strings.HasPrefix(tt.code, "BE") && tt.want.Kind == KindS9 {
			t.Fatalf("test vector %q has %d characters", tt.code, len(tt.code))
		}
		if got := Classify(tt.code, tt.aim); got != tt.want {
			t.Errorf("Classify(%q, %q) = %+v, want %+v", tt.code, tt.aim, got, tt.want)
		}
	}
}

func TestParseS9(t *testing.T) {
	tests := []struct {
		code string
		want S9
	}{
		{"BEBRUABOLPBBAEN60073003000227", S9{Origin: "BEBRUA", Destination: "BOLPBB", Category: "A", Class: "E", Subclass: "N",
			Year: 6, Dispatch: "BEBRUABOLPBBAEN60073", Serial: 3, Highest: IndicatorNo, Registered: IndicatorNo, DeclaredGrams: 22700}},
		{"INBOMAJPKWSAAUY60597001100039", S9{Origin: "INBOMA", Destination: "JPKWSA", Category: "A", Class: "U", Subclass: "Y",
			Year: 6, Dispatch: "INBOMAJPKWSAAUY60597", Serial: 1, Highest: IndicatorYes, Registered: IndicatorNo, DeclaredGrams: 3900}},
		{"RUMOWDDEFRAACCN59999999919999", S9{Origin: "RUMOWD", Destination: "DEFRAA", Category: "C", Class: "C", Subclass: "N",
			Year: 5, Dispatch: "RUMOWDDEFRAACCN59999", Serial: 999, Highest: IndicatorNotGiven, Registered: IndicatorYes,
			DeclaredGrams: 999_900}}, // 999.9 kg or more
	}
	for _, tt := range tests {
		got, err := ParseS9(tt.code)
		if err != nil || got != tt.want {
			t.Errorf("ParseS9(%q) = %+v, %v; want %+v", tt.code, got, err, tt.want)
		}
	}
	for code, want := range map[string]string{
		"BEBRUABOLPBBAEN6007300300022O": ReasonFormat,
		"XXBRUABOLPBBAEN60073003000227": ReasonOrigin,
		"BEBRUAXXLPBBAEN60073003000227": ReasonDestination,
		"BEBRUABOLPBBEEN60073003000227": ReasonCategory,
		"BEBRUABOLPBBAXN60073003000227": ReasonMailClass,
		"BEBRUABOLPBBAEN60000003000227": ReasonDispatch,
		"BEBRUABOLPBBAEN60073000000227": ReasonSerial,
		"BEBRUABOLPBBAEN60073003200227": ReasonIndicator,
		"BEBRUABOLPBBAEN60073003030227": ReasonIndicator,
	} {
		_, err := ParseS9(code)
		var e *S9Error
		if !errors.As(err, &e) || e.Reason != want {
			t.Errorf("ParseS9(%q): error %v, want reason %s", code, err, want)
		}
		if r := Classify(code, ""); r.Kind != KindS9 || r.Reason != want {
			t.Errorf("Classify(%q) = %+v, want s9 %s", code, r, want)
		}
	}
	for _, code := range []string{"", "RR473124829GB", "bebruabolpbbaen60073003000227", "BEBRUABOLPBBAEN6007300300022"} {
		if _, err := ParseS9(code); err != ErrNotS9 {
			t.Errorf("ParseS9(%q): error %v, want ErrNotS9", code, err)
		}
	}
}

func TestIndicatorBool(t *testing.T) {
	for _, tt := range []struct {
		i            Indicator
		value, given bool
	}{{IndicatorNotGiven, false, false}, {IndicatorNo, false, true}, {IndicatorYes, true, true}} {
		if v, g := tt.i.Bool(); v != tt.value || g != tt.given {
			t.Errorf("%d.Bool() = %v, %v", tt.i, v, g)
		}
	}
}

// formatS9 writes a decoded S9 back as its code.
func formatS9(s S9) string {
	digit := map[Indicator]byte{IndicatorNo: '0', IndicatorYes: '1', IndicatorNotGiven: '9'}
	return fmt.Sprintf("%s%03d%c%c%04d", s.Dispatch, s.Serial, digit[s.Highest], digit[s.Registered], s.DeclaredGrams/100)
}

// FuzzS9: Classify and ParseS9 never panic and agree on every code; what
// ParseS9 decodes writes back as the same code, with its fields in range.
func FuzzS9(f *testing.F) {
	for _, s := range []string{
		"BEBRUABOLPBBAEN60073003000227", "INBOMAJPKWSAAUY60597001100039", "RUMOWDDEFRAACCN59999999919999",
		"BEBRUABOLPBBAEN6007300300022O", "XXBRUABOLPBBAEN60073003000227", "BEBRUAXXLPBBAEN60073003000227",
		"BEBRUABOLPBBEEN60073003000227", "BEBRUABOLPBBAXN60073003000227", "BEBRUABOLPBBAEN60000003000227",
		"BEBRUABOLPBBAEN60073000000227", "BEBRUABOLPBBAEN60073003200227", "RR473124829GB", "",
		"0109506000134352" + "10ABCDEFGHIJK", "\xffEBRUABOLPBBAEN60073003000227",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, code string) {
		r := Classify(code, "")
		s, err := ParseS9(code)
		for _, aim := range []string{"]C0", "]C1", "]E0"} {
			if r2 := Classify(code, aim); r.Kind == KindS9 && r2 != r {
				t.Fatalf("Classify(%q, %q) = %+v, without AIM %+v: an S9 is one whatever the AIM", code, aim, r2, r)
			}
		}
		switch {
		case r.Kind != KindS9:
			if err != ErrNotS9 {
				t.Fatalf("Classify(%q) = %+v, ParseS9 error %v: want ErrNotS9", code, r, err)
			}
		case !r.Valid:
			var e *S9Error
			if !errors.As(err, &e) || e.Reason != r.Reason {
				t.Fatalf("Classify(%q) = %+v, ParseS9 error %v: want the same reason", code, r, err)
			}
		default:
			if err != nil {
				t.Fatalf("Classify(%q) = %+v, ParseS9 error %v", code, r, err)
			}
			if again := formatS9(s); again != code {
				t.Fatalf("ParseS9(%q) = %+v writes back as %q", code, s, again)
			}
			if s.Origin+s.Destination+s.Category+s.Class+s.Subclass != code[:15] || s.Year < 0 || s.Year > 9 ||
				s.Serial < 1 || s.Serial > 999 || s.DeclaredGrams < 0 || s.DeclaredGrams > 999_900 ||
				!ValidCountry(s.Origin[:2]) || !ValidCountry(s.Destination[:2]) {
				t.Fatalf("ParseS9(%q) = %+v: a field out of range", code, s)
			}
		}
	})
}
