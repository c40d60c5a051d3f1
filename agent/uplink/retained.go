package uplink

import (
	"context"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// Retained is a source of retained messages the uplink publishes under
// the agent's prefix: the dispatches' completeness (docs/WORKFLOWS.md).
type Retained interface {
	// Retained returns the messages to publish: every one when all is
	// set (a new session), else those changed since they were last sent.
	Retained(all bool) []RetainedMessage
	// RetainedSent says the broker took a message's Version.
	RetainedSent(topic string, version uint64)
	// RetainedChanged gets a value when a message changed.
	RetainedChanged() <-chan struct{}
}

// RetainedMessage is one retained message: Topic is below the agent's
// prefix; an empty Payload clears the broker's retained message.
type RetainedMessage struct {
	Topic   string
	Payload []byte
	Version uint64
}

// publishRetained publishes the retained messages (QoS 1), each in turn,
// and tells the source which the broker took; it stops at the first that
// fails, which the next session publishes again.
func (u *Uplink) publishRetained(ctx context.Context, c mqtt.Client, all bool) {
	for _, m := range u.retained.Retained(all) {
		if err := waitToken(ctx, c.Publish(u.prefix+"/"+m.Topic, 1, true, m.Payload), u.cfg.ConnectTimeout.D()); err != nil {
			return
		}
		u.retained.RetainedSent(m.Topic, m.Version)
	}
}
