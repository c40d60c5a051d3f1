package sim

// The check-digit functions, for codes_test.go (package sim_test), which
// compares them with agent/parcel's.
var (
	S10CheckDigit   = s10CheckDigit
	Mod10CheckDigit = mod10CheckDigit
)
