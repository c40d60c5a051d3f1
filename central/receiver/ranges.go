package receiver

import "slices"

// Ranges compresses seqs into sorted inclusive [first, last] ranges,
// ignoring duplicates: 1 2 3 5 7 8 gives [1,3] [5,5] [7,8]. seqs is
// sorted in place.
func Ranges(seqs []int64) [][2]int64 {
	slices.Sort(seqs)
	var out [][2]int64
	for _, s := range seqs {
		if n := len(out); n > 0 && s <= out[n-1][1]+1 {
			out[n-1][1] = max(out[n-1][1], s)
			continue
		}
		out = append(out, [2]int64{s, s})
	}
	return out
}
