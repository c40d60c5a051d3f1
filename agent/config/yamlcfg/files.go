package yamlcfg

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"os"
	"time"
)

// MaxFileSize caps a configuration file. A real one is a few KiB; the cap
// keeps a wrong path (a log, a disk image, /dev/zero) from being read into
// memory whole.
const MaxFileSize = 1 << 20

// ReadFile reads a configuration file. A file over MaxFileSize is refused
// with an Errors value, without being read whole: a regular file by its
// size, anything else (a pipe) after MaxFileSize+1 bytes. Other failures
// are "read config: ..." errors.
func ReadFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	defer f.Close()
	tooBig := func(what string) error {
		return Errors{{File: path, Line: 1, Col: 1, Msg: fmt.Sprintf(
			"%s the %s limit for a configuration file: is this the right file?", what, Size(MaxFileSize))}}
	}
	if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() && fi.Size() > MaxFileSize {
		return nil, tooBig("the file is " + HumanBytes(fi.Size()) + ", over")
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	if len(data) > MaxFileSize {
		return nil, tooBig("the file is longer than")
	}
	return data, nil
}

// Readable checks that path is a regular file this process can open.
func Readable(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return fmt.Errorf("%s is a directory", path)
	}
	return nil
}

// CheckCA reports whether a CA file holds at least one PEM certificate.
func CheckCA(path string) error {
	pem, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if !x509.NewCertPool().AppendCertsFromPEM(pem) {
		return fmt.Errorf("no PEM certificate found in %s", path)
	}
	return nil
}

// CheckKeyPair loads a client certificate and key and reports a pair that
// does not match or a certificate that is not valid at now.
func CheckKeyPair(certFile, keyFile string, now time.Time) error {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return fmt.Errorf("client certificate %s / key %s: %w", certFile, keyFile, err)
	}
	leaf := pair.Leaf
	if leaf == nil && len(pair.Certificate) > 0 {
		if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return fmt.Errorf("client certificate %s: %w", certFile, err)
		}
	}
	switch {
	case now.After(leaf.NotAfter):
		return fmt.Errorf("client certificate %s expired on %s", certFile, leaf.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(leaf.NotBefore):
		return fmt.Errorf("client certificate %s is not valid before %s (check the clock)", certFile, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	return nil
}

// TLS holds the optional client TLS files of an MQTT connection
// (the mqtt.tls section of both configuration files).
type TLS struct {
	CAFile     string `yaml:"ca_file"`
	CertFile   string `yaml:"cert_file"`
	KeyFile    string `yaml:"key_file"`
	ServerName string `yaml:"server_name"`
}

// Load reads the files anew (so that renewed ones are picked up without a
// restart) into a client tls.Config with TLS 1.2 at least. When validAt
// is not zero, the client certificate must be valid at that time.
func (t TLS) Load(validAt time.Time) (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("mqtt.tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("mqtt.tls.ca_file %s: no PEM certificate found", t.CAFile)
		}
		c.RootCAs = pool
	}
	if t.CertFile != "" {
		if !validAt.IsZero() {
			if err := CheckKeyPair(t.CertFile, t.KeyFile, validAt); err != nil {
				return nil, fmt.Errorf("mqtt.tls.cert_file: %w", err)
			}
		}
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("mqtt.tls.cert_file/key_file: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}
