package testmqtt

import (
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// Message is one received publish.
type Message struct {
	Topic    string
	Payload  []byte
	Retained bool
	At       time.Time // when it was received
}

// Subscriber is a central-system stand-in: a persistent-session QoS 1
// subscriber that reconnects by itself, so it receives what was published
// while it was away (and across broker restarts).
type Subscriber struct {
	t    testing.TB
	c    mqtt.Client
	mu   sync.Mutex
	msgs []Message
	kick chan struct{}
}

// Subscribe connects to the broker and subscribes to filter at QoS 1.
func Subscribe(t testing.TB, b *Broker, clientID, filter string, opts ...func(*mqtt.ClientOptions)) *Subscriber {
	t.Helper()
	s := &Subscriber{t: t, kick: make(chan struct{}, 1)}
	o := mqtt.NewClientOptions().AddBroker(b.URL()).SetClientID(clientID).
		SetCleanSession(false).SetAutoReconnect(true).SetMaxReconnectInterval(200 * time.Millisecond).
		SetConnectRetry(true).SetConnectRetryInterval(100 * time.Millisecond).
		SetDefaultPublishHandler(s.handle)
	for _, f := range opts {
		f(o)
	}
	s.c = mqtt.NewClient(o)
	if tok := s.c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscriber connect: %v", tok.Error())
	}
	if tok := s.c.Subscribe(filter, 1, s.handle); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", filter, tok.Error())
	}
	t.Cleanup(func() { s.c.Disconnect(100) })
	return s
}

func (s *Subscriber) handle(_ mqtt.Client, m mqtt.Message) {
	s.mu.Lock()
	s.msgs = append(s.msgs, Message{Topic: m.Topic(), Payload: append([]byte(nil), m.Payload()...), Retained: m.Retained(), At: time.Now()})
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Messages returns a copy of everything received so far.
func (s *Subscriber) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.msgs...)
}

// WaitFor waits until cond holds for the messages received, or fails the
// test after timeout.
func (s *Subscriber) WaitFor(timeout time.Duration, what string, cond func([]Message) bool) []Message {
	s.t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		msgs := s.Messages()
		if cond(msgs) {
			return msgs
		}
		select {
		case <-s.kick:
		case <-time.After(50 * time.Millisecond):
		case <-deadline.C:
			s.t.Fatalf("timed out after %v waiting for %s (%d messages received)", timeout, what, len(msgs))
		}
	}
}

// Events decodes the messages under a topic part (e.g. "/scans/") as JSON
// objects into out-of-band maps, in arrival order.
func Events(msgs []Message, topicPart string) []map[string]any {
	var out []map[string]any
	for _, m := range msgs {
		if !strings.Contains(m.Topic, topicPart) {
			continue
		}
		var ev map[string]any
		if json.Unmarshal(m.Payload, &ev) == nil {
			out = append(out, ev)
		}
	}
	return out
}
