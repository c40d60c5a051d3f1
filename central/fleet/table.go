package fleet

import (
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"
)

// WriteTable writes the hubs as a table, one row per hub.
func WriteTable(w io.Writer, hubs []Hub, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SITE\tAGENT\tSTATE\tSINCE\tVERSION\tUPLINK\tBACKLOG\tOLDEST\tUNRECEIPTED\tDEV ERR\tCLOCK\tLAST SEEN")
	online := 0
	for _, h := range hubs {
		if h.State == "online" {
			online++
		}
		unrec := "-"
		if h.Unreceipted != nil {
			unrec = strconv.FormatInt(*h.Unreceipted, 10)
		}
		oldest := "-"
		if h.Backlog > 0 {
			oldest = ago(time.Duration(h.BacklogOldestAge * float64(time.Second)))
		}
		backlog := "-"
		if h.HealthAt != nil {
			backlog = strconv.FormatInt(h.Backlog, 10)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s ago\t%s\t%s\t%s\t%s\t%s\t%d/%d\t%s\t%s ago\n",
			h.Site, h.Agent, h.State, ago(now.Sub(h.Since)), dash(h.Version), dash(h.Uplink), backlog, oldest, unrec,
			h.DevicesInError, h.Devices, dash(h.Clock), ago(now.Sub(h.LastSeen)))
	}
	fmt.Fprintf(tw, "%d hubs, %d online, %d offline\n", len(hubs), online, len(hubs)-online)
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// ago is a short duration: 42s, 5m3s, 2h10m, 3d4h.
func ago(d time.Duration) string {
	d = max(d, 0).Round(time.Second)
	switch {
	case d < time.Minute:
		return d.String()
	case d < time.Hour:
		return fmt.Sprintf("%dm%ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
}
