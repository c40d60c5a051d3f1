package parcel

// Tracking event codes a station's scans can stand for (UPU EDI, EMSEVT
// style). The list is the common subset of the UPU's EMSEVT codes as
// published in postal operators' tracking documentation; it has not been
// checked against the UPU's own code list, so a site that needs another
// code sets allow_custom_events on the station (docs/STATIONS.md).
var eventCodes = [...]struct{ code, meaning string }{
	{"EMA", "posting / collection"},
	{"EMB", "arrival at outward office of exchange"},
	{"EMC", "departure from outward office of exchange"},
	{"EXA", "presented to export customs"},
	{"EXB", "held by export customs"},
	{"EXC", "returned from export customs"},
	{"EXD", "held at outward office of exchange"},
	{"EMJ", "arrival at transit office of exchange"},
	{"EMK", "departure from transit office of exchange"},
	{"EMD", "arrival at inward office of exchange"},
	{"EDA", "held at inward office of exchange"},
	{"EDB", "presented to import customs"},
	{"EME", "held by customs"},
	{"EDC", "returned from customs"},
	{"EMF", "departure from inward office of exchange"},
	{"EDD", "into sorting centre"},
	{"EDE", "out of sorting centre"},
	{"EMG", "arrival at delivery office"},
	{"EDF", "held at delivery office"},
	{"EDG", "out for delivery"},
	{"EDH", "at pick-up point"},
	{"EMH", "unsuccessful delivery"},
	{"EMI", "final delivery"},
}

// EventMeaning returns what a known tracking event code stands for, and
// whether the code is known.
func EventMeaning(code string) (string, bool) {
	for _, e := range eventCodes {
		if e.code == code {
			return e.meaning, true
		}
	}
	return "", false
}

// EventCodes lists the known tracking event codes.
func EventCodes() []string {
	out := make([]string, len(eventCodes))
	for i, e := range eventCodes {
		out[i] = e.code
	}
	return out
}
