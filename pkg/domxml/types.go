// Package domxml: placeholder with the agreed types only; the parser lands
// from the libvirtwatch branch, which replaces this file.
package domxml

import "github.com/rarp-announce/rarp-announce/pkg/rarp"

type Domain struct {
	Name       string
	UUID       string
	Interfaces []Interface
}

type Interface struct {
	Type                                               string
	MAC                                                rarp.MAC
	Target                                             string
	Alias                                              string
	SourceBridge, SourceDev, SourceNetwork, SourceMode string
	SourcePortID                                       string
	VLANs                                              []VLANTag
	VLANTrunk                                          bool
	VirtualPort                                        string
	InterfaceID                                        string
	Model                                              string
}

type VLANTag struct {
	ID         uint16
	NativeMode string
}
