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

// publishRetained publishes the retained messages (QoS 1) without waiting
// for each one's PUBACK in turn (thousands of dispatches must not hold
// health up on a slow link), then tells the source which the broker
// took; those it did not are sent again by the next session.
func (u *Uplink) publishRetained(ctx context.Context, c mqtt.Client, all bool) {
	msgs := u.retained.Retained(all)
	toks := make([]mqtt.Token, 0, len(msgs))
	for _, m := range msgs {
		toks = append(toks, c.Publish(u.prefix+"/"+m.Topic, 1, true, m.Payload))
	}
	for i, tok := range toks {
		if err := waitToken(ctx, tok, u.cfg.ConnectTimeout.D()); err != nil {
			return
		}
		u.retained.RetainedSent(msgs[i].Topic, msgs[i].Version)
	}
}
