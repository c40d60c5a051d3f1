package record

// Schemas of the workflow events (docs/WORKFLOWS.md).
const (
	SchemaReceptacle = "scanagent.receptacle/v1"
	SchemaCancel     = "scanagent.cancel/v1"
)

// Receptacle is a receptacle (a bag) closed at a station, published on
// P/receptacles/<station>: one emptied (open_receptacles) or one filled
// and labelled (fill_receptacles).
type Receptacle struct {
	Schema  string `json:"schema"`
	ID      string `json:"id"`
	Seq     uint64 `json:"seq"`
	Agent   string `json:"agent"`
	Site    string `json:"site"`
	Station string `json:"station"`
	// Workflow is open_receptacles or fill_receptacles.
	Workflow string `json:"workflow"`
	// Receptacle is the S9 label and S9 its decoding; absent for a bag
	// session closed without a label (fill_receptacles, by control or
	// idle).
	Receptacle string `json:"receptacle,omitempty"`
	S9         *S9    `json:"s9,omitempty"`
	BagSession string `json:"bag_session,omitempty"` // fill_receptacles
	// Items counts the item scans made in it, less those cancelled
	// (Cancelled); FirstItemSeq and LastItemSeq are the first and last
	// of them (absent with no item).
	Items        int    `json:"items"`
	Cancelled    int    `json:"cancelled,omitempty"`
	FirstItemSeq uint64 `json:"first_item_seq,omitempty"`
	LastItemSeq  uint64 `json:"last_item_seq,omitempty"`
	// ItemsGrams sums the weights paired with its items.
	ItemsGrams int64 `json:"items_grams"`
	// DeclaredGrams is the label's gross weight (absent without a label
	// or when the label says 0000); MeasuredGrams the weight paired with
	// the label's scan; WeightMismatch is set when both are known and
	// differ by more than the station's weight_tolerance.
	DeclaredGrams  *int64 `json:"declared_grams,omitempty"`
	MeasuredGrams  *int64 `json:"measured_grams,omitempty"`
	WeightMismatch *bool  `json:"weight_mismatch,omitempty"`
	Operator       string `json:"operator,omitempty"`
	OpenedAt       string `json:"opened_at"`
	ClosedAt       string `json:"closed_at"`
	ClosedBy       string `json:"closed_by"` // label, control or idle
	Clock          string `json:"clock,omitempty"`
}

// Cancel withdraws the last scan made at a station (the cancel control
// code), published on P/scans/<station>: the scan is not deleted, central
// marks it cancelled.
type Cancel struct {
	Schema      string `json:"schema"`
	ID          string `json:"id"`
	Seq         uint64 `json:"seq"`
	Agent       string `json:"agent"`
	Site        string `json:"site"`
	Station     string `json:"station"`
	Cancels     string `json:"cancels"` // the id of the scan cancelled
	Barcode     string `json:"barcode"` // its code, for people reading the stream
	Operator    string `json:"operator,omitempty"`
	CancelledAt string `json:"cancelled_at"`
	Clock       string `json:"clock,omitempty"`
}
