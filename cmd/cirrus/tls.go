package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/config"
)

// federationTLS picks the federation listener's certificate: the configured
// one; else one minted at start from a configured CA (how test suites that run
// several servers on one machine make them trust each other); else a
// self-signed one made on first start and kept in the data folder.
func federationTLS(cfg *config.Config) (*tls.Config, error) {
	var cert tls.Certificate
	var err error
	switch {
	case cfg.TLSCertificatePath != "":
		cert, err = tls.LoadX509KeyPair(cfg.TLSCertificatePath, cfg.TLSPrivateKeyPath)
	case cfg.TLSCACertificatePath != "":
		cert, err = mintFromCA(cfg)
	default:
		cert, err = selfSigned(cfg)
	}
	if err != nil {
		return nil, fmt.Errorf("federation certificate: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

func mintFromCA(cfg *config.Config) (tls.Certificate, error) {
	ca, err := tls.LoadX509KeyPair(cfg.TLSCACertificatePath, cfg.TLSCAKeyPath)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("load CA: %w", err)
	}
	caCert, err := x509.ParseCertificate(ca.Certificate[0])
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("parse CA: %w", err)
	}
	signer, ok := ca.PrivateKey.(crypto.Signer)
	if !ok {
		return tls.Certificate{}, errors.New("CA key cannot sign")
	}
	key, der, err := newLeaf(cfg.ServerName, caCert, signer)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der, ca.Certificate[0]}, PrivateKey: key}, nil
}

func selfSigned(cfg *config.Config) (tls.Certificate, error) {
	certPath := filepath.Join(cfg.DataDir, "federation.crt")
	keyPath := filepath.Join(cfg.DataDir, "federation.key")
	if cert, err := tls.LoadX509KeyPair(certPath, keyPath); err == nil {
		return cert, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return tls.Certificate{}, fmt.Errorf("load %s: %w", certPath, err)
	}
	key, der, err := newLeaf(cfg.ServerName, nil, nil)
	if err != nil {
		return tls.Certificate{}, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return tls.Certificate{}, err
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return tls.Certificate{}, err
	}
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return tls.Certificate{}, err
	}
	return tls.LoadX509KeyPair(certPath, keyPath)
}

// newLeaf makes a certificate for the server name's host, signed by parent,
// or by itself when parent is nil.
func newLeaf(serverName string, parent *x509.Certificate, parentKey crypto.Signer) (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, err
	}
	host := serverName
	if h, _, err := net.SplitHostPort(serverName); err == nil {
		host = h
	}
	host = trimBrackets(host)
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: host},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(1, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if ip := net.ParseIP(host); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{host}
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return nil, nil, fmt.Errorf("create certificate: %w", err)
	}
	return key, der, nil
}

func trimBrackets(h string) string {
	if len(h) > 1 && h[0] == '[' && h[len(h)-1] == ']' {
		return h[1 : len(h)-1]
	}
	return h
}
