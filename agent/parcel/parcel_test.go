package parcel

import (
	"strings"
	"testing"
)

func TestClassify(t *testing.T) {
	ok := func(k Kind) Result { return Result{Kind: k, Valid: true} }
	bad := func(k Kind, r string) Result { return Result{Kind: k, Reason: r} }
	other := ok(KindOther)
	tests := []struct {
		code, aim string
		want      Result
	}{
		// UPU S10
		{"RR473124829GB", "]C0", ok(KindS10)},
		{"RR287043775IN", "", ok(KindS10)}, // S mod 11 = 0: C = 11 → 5
		{"RR473124850GB", "", ok(KindS10)}, // S = 221, S mod 11 = 1: C = 10 → 0
		{"EA123456785RU", "", ok(KindS10)},
		{"LA123456785RU", "", ok(KindS10)}, // Russian Post small packets since 1 Dec 2025 (L, not R)
		{"LA123456785RU", "]C0", ok(KindS10)},
		{"LA123456784RU", "", bad(KindS10, ReasonCheckDigit)},
		{"RR473124828GB", "]C0", bad(KindS10, ReasonCheckDigit)},
		{"RR287043770IN", "", bad(KindS10, ReasonCheckDigit)},
		{"RR473124851GB", "", bad(KindS10, ReasonCheckDigit)},
		{"JJ473124829GB", "", bad(KindS10, ReasonServiceIndicator)},
		{"KA473124829GB", "", bad(KindS10, ReasonServiceIndicator)},
		{"SB473124829GB", "", bad(KindS10, ReasonServiceIndicator)},
		{"TC473124829GB", "", bad(KindS10, ReasonServiceIndicator)},
		{"WZ473124829GB", "", bad(KindS10, ReasonServiceIndicator)},
		{"RR473124829XX", "", bad(KindS10, ReasonCountry)}, // check digit right, country not
		{"RR473124829UK", "", bad(KindS10, ReasonCountry)}, // exceptionally reserved
		{"RR473124829EU", "", bad(KindS10, ReasonCountry)},
		// priority: check_digit > service_indicator > country
		{"JJ473124828XX", "", bad(KindS10, ReasonCheckDigit)},
		{"JJ473124829XX", "", bad(KindS10, ReasonServiceIndicator)},
		// S10 shape wins over any AIM
		{"RR473124829GB", "]C1", ok(KindS10)},
		{"RR473124829GB", "]E0", ok(KindS10)},
		// not normalised: case, whitespace, near-S10 shapes are other
		{"rr473124829gb", "", other},
		{"Rr473124829GB", "", other},
		{" RR473124829GB", "", other},
		{"RR473124829GB\r", "", other},
		{"RR47312482XGB", "", other},
		{"RR4731248299GB", "", other},
		{"R1473124829GB", "", other},
		// Russian Post 14 digits
		{"10100024010003", "", ok(KindRU14)},
		{"10100024010003", "]C0", ok(KindRU14)},
		{"10100024010003", "]d1", ok(KindRU14)},
		{"10100024010004", "", bad(KindRU14, ReasonCheckDigit)},
		// GS1 element strings
		{"00106141412345678908", "]C1", ok(KindGS1)},
		{"(00)106141412345678908", "]C1", ok(KindGS1)},
		{"00106141412345678907", "]C1", bad(KindGS1, ReasonCheckDigit)},
		{"\x1d00106141412345678908", "]C1", ok(KindGS1)},
		{"0109506000134352" + "17261231" + "10AB-12\x1d" + "21XYZ", "]d2", ok(KindGS1)},
		{"0109506000134352" + "10AB-12\x1d" + "00106141412345678908", "]Q3", ok(KindGS1)},
		{"0109506000134352" + "10AB-12\x1d" + "00106141412345678900", "]Q3", bad(KindGS1, ReasonCheckDigit)},
		{"(01)09506000134352(3103)001250(10)AB1", "]e0", ok(KindGS1)},
		{"0109506000134352" + "3103001250" + "4107612345678900", "]C1", ok(KindGS1)},
		{"(02)09506000134352(37)12", "]C1", ok(KindGS1)},
		{"(01)09506000134351", "]C1", bad(KindGS1, ReasonCheckDigit)},
		{"10AB12\x1d" + "21X\x1d", "]C1", ok(KindGS1)}, // no key AI, trailing <GS> tolerated
		{"0109506000134352\x1d\x1d10AB", "]C1", bad(KindGS1, ReasonFormat)},
		{"010950600013435", "]C1", bad(KindGS1, ReasonFormat)},         // GTIN too short
		{"(01)0950600013435", "]C1", bad(KindGS1, ReasonFormat)},       // GTIN too short
		{"(001)106141412345678908", "]C1", bad(KindGS1, ReasonFormat)}, // AI length wrong
		{"()1", "]C1", bad(KindGS1, ReasonFormat)},
		{"(01", "]C1", bad(KindGS1, ReasonFormat)},
		{"(10)AB(01", "]C1", bad(KindGS1, ReasonFormat)},
		{"(10)", "]C1", bad(KindGS1, ReasonFormat)},
		{"10", "]C1", bad(KindGS1, ReasonFormat)},
		{"1701AB31", "]C1", bad(KindGS1, ReasonFormat)},   // date not numeric
		{"31A2001250", "]C1", bad(KindGS1, ReasonFormat)}, // AI not numeric
		{"50123", "]C1", bad(KindGS1, ReasonFormat)},      // unknown AI prefix
		{"hello", "]d2", bad(KindGS1, ReasonFormat)},
		{"", "]C1", bad(KindGS1, ReasonFormat)},
		// plain GTINs by AIM
		{"4006381333931", "]E0", ok(KindGS1)},
		{"036000291452", "]E0", ok(KindGS1)},
		{"4006381333932", "]E0", bad(KindGS1, ReasonCheckDigit)},
		{"40063813339", "]E0", bad(KindGS1, ReasonFormat)},
		{"400638133393A", "]E0", bad(KindGS1, ReasonFormat)},
		{"96385074", "]E4", ok(KindGS1)},
		{"96385075", "]E4", bad(KindGS1, ReasonCheckDigit)},
		{"10614141000415", "]I1", ok(KindGS1)},
		{"10614141000416", "]I1", bad(KindGS1, ReasonCheckDigit)},
		{"1234567890", "]I1", other},
		// no AIM: digit-count heuristics
		{"106141412345678908", "", ok(KindGS1)},
		{"106141412345678909", "", bad(KindGS1, ReasonCheckDigit)},
		{"4006381333931", "", ok(KindGS1)},
		{"036000291452", "", ok(KindGS1)},
		{"96385074", "", ok(KindGS1)},
		{"10614141000415", "", ok(KindRU14)}, // GTIN-14 without AIM: ru14 wins
		{"4006381333931", "]C0", other},      // digit strings in non-GS1 symbologies are not GS1
		{"106141412345678908", "]C0", other},
		// other
		{"", "", other},
		{"hello world", "", other},
		{"ABC-123", "]C0", other},
		{"https://example.com/p?id=1", "]Q1", other},
		{"\xff\xfe\x00", "", other},
		{"123", "", other},
	}
	for _, tt := range tests {
		if got := Classify(tt.code, tt.aim); got != tt.want {
			t.Errorf("Classify(%q, %q) = %+v, want %+v", tt.code, tt.aim, got, tt.want)
		}
	}
}

func TestS10CheckDigit(t *testing.T) {
	tests := []struct {
		serial string
		want   int
		ok     bool
	}{
		{"47312482", 9, true},
		{"28704377", 5, true}, // S = 231, 231 mod 11 = 0 → 11 → 5
		{"47312485", 0, true}, // S = 221, 221 mod 11 = 1 → 10 → 0
		{"00000000", 5, true},
		{"4731248", 0, false},
		{"473124829", 0, false},
		{"4731248a", 0, false},
		{"", 0, false},
	}
	for _, tt := range tests {
		got, ok := S10CheckDigit(tt.serial)
		if got != tt.want || ok != tt.ok {
			t.Errorf("S10CheckDigit(%q) = %d, %v; want %d, %v", tt.serial, got, ok, tt.want, tt.ok)
		}
	}
}

func TestMod10CheckDigit(t *testing.T) {
	tests := []struct {
		digits string
		want   int
		ok     bool
	}{
		{"400638133393", 1, true},      // GTIN-13
		{"03600029145", 2, true},       // GTIN-12
		{"9638507", 4, true},           // GTIN-8
		{"1061414100041", 5, true},     // GTIN-14
		{"10614141234567890", 8, true}, // SSCC
		{"1010002401000", 3, true},     // Russian Post example
		{"0", 0, true},
		{"", 0, false},
		{"12a4", 0, false},
	}
	for _, tt := range tests {
		got, ok := Mod10CheckDigit(tt.digits)
		if got != tt.want || ok != tt.ok {
			t.Errorf("Mod10CheckDigit(%q) = %d, %v; want %d, %v", tt.digits, got, ok, tt.want, tt.ok)
		}
	}
}

func TestValidCountry(t *testing.T) {
	codes := strings.Fields(iso3166)
	if len(codes) != 249 || len(iso3166) != 3*249 {
		t.Fatalf("iso3166 has %d codes (%d bytes), want 249", len(codes), len(iso3166))
	}
	for i, c := range codes {
		if len(c) != 2 || c[0] < 'A' || c[0] > 'Z' || c[1] < 'A' || c[1] > 'Z' {
			t.Errorf("bad entry %q", c)
		}
		if i > 0 && codes[i-1] >= c {
			t.Errorf("not sorted or duplicate: %q before %q", codes[i-1], c)
		}
		if !ValidCountry(c) {
			t.Errorf("ValidCountry(%q) = false", c)
		}
	}
	for _, c := range []string{"", "G", "GBR", "gb", "Gb", "UK", "EU", "UN", "XX", "AA", "ZZ", "A ", " A", "  "} {
		if ValidCountry(c) {
			t.Errorf("ValidCountry(%q) = true", c)
		}
	}
}

var seeds = []struct{ code, aim string }{
	{"RR473124829GB", "]C0"}, {"RR287043775IN", ""}, {"RR473124829XX", ""},
	{"JJ473124829GB", ""}, {"10100024010003", ""}, {"10100024010003", "]C0"},
	{"00106141412345678908", "]C1"}, {"(00)106141412345678908", "]C1"},
	{"0109506000134352\x1d10AB\x1d21X", "]d2"}, {"(01)09506000134352(10)AB", "]e0"},
	{"4006381333931", "]E0"}, {"96385074", "]E4"}, {"10614141000415", "]I1"},
	{"106141412345678908", ""}, {"()", "]Q3"}, {"", ""}, {"\xff", "]C1"},
	{"LA123456785RU", ""}, {"BEBRUABOLPBBAEN60073003000227", "]C0"}, {"INBOMAJPKWSAAUY60597001100039", ""},
	{"XXBRUABOLPBBAEN60073003000227", ""}, {"BEBRUABOLPBBAEN6007300300022O", ""},
}

func FuzzClassify(f *testing.F) {
	for _, s := range seeds {
		f.Add(s.code, s.aim)
	}
	f.Fuzz(func(t *testing.T, code, aim string) {
		r := Classify(code, aim)
		switch r.Kind {
		case KindS10, KindS9, KindRU14, KindGS1, KindOther:
		default:
			t.Fatalf("Classify(%q, %q): unknown kind %q", code, aim, r.Kind)
		}
		if r.Valid != (r.Reason == "") {
			t.Fatalf("Classify(%q, %q) = %+v: Valid must be Reason == \"\"", code, aim, r)
		}
		switch r.Reason {
		case "", ReasonCheckDigit, ReasonServiceIndicator, ReasonCountry, ReasonFormat,
			ReasonOrigin, ReasonDestination, ReasonCategory, ReasonMailClass, ReasonDispatch, ReasonSerial, ReasonIndicator:
		default:
			t.Fatalf("Classify(%q, %q): unknown reason %q", code, aim, r.Reason)
		}
		if r.Kind == KindS10 && len(code) != 13 {
			t.Fatalf("Classify(%q, %q): s10 of length %d", code, aim, len(code))
		}
		if r.Kind == KindS9 && len(code) != 29 {
			t.Fatalf("Classify(%q, %q): s9 of length %d", code, aim, len(code))
		}
		if r.Kind == KindOther && !r.Valid {
			t.Fatalf("Classify(%q, %q): invalid other", code, aim)
		}
	})
}

func BenchmarkClassify(b *testing.B) {
	for b.Loop() {
		for _, s := range seeds {
			Classify(s.code, s.aim)
		}
	}
}
