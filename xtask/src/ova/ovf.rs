//! The OVF 1.x descriptor (DMTF DSP0243, envelope namespace
//! `http://schemas.dmtf.org/ovf/envelope/1`) with VMware's `vmw:` extensions:
//! written by [`render`] from plain values (every one escaped), read back by
//! [`inspect`] for the linter.
//!
//! No UUIDs and no MAC addresses are written: an importer assigns them per
//! instance, so two VMs from one OVA never share an identity and two builds
//! of one OVA are byte-identical.

use anyhow::{bail, Context, Result};
use quick_xml::escape::escape;
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;
use serde::Serialize;

pub const NS_OVF: &str = "http://schemas.dmtf.org/ovf/envelope/1";
pub const NS_VMW: &str = "http://www.vmware.com/schema/ovf";
const NS_RASD: &str =
    "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData";
const NS_VSSD: &str =
    "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData";
const NS_CIM: &str = "http://schemas.dmtf.org/wbem/wscim/1/common";
const NS_XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";
/// `ovf:format` of a streamOptimized VMDK disk.
pub const VMDK_STREAM_FORMAT: &str =
    "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized";

/// Everything the descriptor says, as plain values (also the op's description).
#[derive(Debug, Clone, Serialize)]
pub struct Params {
    /// VM name on import (the appliance name).
    pub name: String,
    pub product: String,
    pub vendor: Option<String>,
    pub version: String,
    pub url: Option<String>,
    pub description: Option<String>,
    pub os_type: String,
    pub os_id: u16,
    pub cpus: u32,
    pub memory_mb: u32,
    /// `rasd:ResourceSubType` of the NIC (`E1000`, `VmxNet3`).
    pub nic: String,
    pub virtual_system_type: String,
    /// Boot with UEFI firmware (`vmw:Config firmware=efi`).
    pub efi: bool,
    /// The VMDK member's name.
    pub disk_file: String,
}

/// Values only known once the VMDK exists.
#[derive(Debug, Clone, Copy)]
pub struct DiskFacts {
    /// Bytes of the VMDK file (`References/File ovf:size`).
    pub file_size: u64,
    /// Virtual size in bytes (`Disk ovf:capacity`).
    pub capacity: u64,
}

/// Escaped for XML text and attribute values; control characters XML 1.0
/// cannot carry are dropped.
fn e(s: &str) -> String {
    let clean: String = s
        .chars()
        .filter(|c| !c.is_control() || matches!(c, '\t' | '\n'))
        .collect();
    escape(clean.as_str()).into_owned()
}

/// The descriptor text.
pub fn render(p: &Params, d: DiskFacts) -> String {
    use std::fmt::Write;
    let mut x = String::with_capacity(8192);
    let nl = |x: &mut String, indent: usize, s: &str| {
        for _ in 0..indent {
            x.push_str("  ");
        }
        x.push_str(s);
        x.push('\n');
    };
    x.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<Envelope xmlns=\"{NS_OVF}\" xmlns:ovf=\"{NS_OVF}\" xmlns:cim=\"{NS_CIM}\" xmlns:rasd=\"{NS_RASD}\" \
         xmlns:vmw=\"{NS_VMW}\" xmlns:vssd=\"{NS_VSSD}\" xmlns:xsi=\"{NS_XSI}\">"
    );
    nl(&mut x, 1, "<References>");
    nl(
        &mut x,
        2,
        &format!(
            "<File ovf:href=\"{}\" ovf:id=\"file1\" ovf:size=\"{}\"/>",
            e(&p.disk_file),
            d.file_size
        ),
    );
    nl(&mut x, 1, "</References>");
    nl(&mut x, 1, "<DiskSection>");
    nl(&mut x, 2, "<Info>Virtual disk information</Info>");
    nl(
        &mut x,
        2,
        &format!(
            "<Disk ovf:capacity=\"{}\" ovf:capacityAllocationUnits=\"byte\" ovf:diskId=\"vmdisk1\" \
             ovf:fileRef=\"file1\" ovf:format=\"{VMDK_STREAM_FORMAT}\"/>",
            d.capacity
        ),
    );
    nl(&mut x, 1, "</DiskSection>");
    nl(&mut x, 1, "<NetworkSection>");
    nl(&mut x, 2, "<Info>The list of logical networks</Info>");
    nl(&mut x, 2, "<Network ovf:name=\"VM Network\">");
    nl(
        &mut x,
        3,
        "<Description>The VM Network network</Description>",
    );
    nl(&mut x, 2, "</Network>");
    nl(&mut x, 1, "</NetworkSection>");
    nl(
        &mut x,
        1,
        &format!("<VirtualSystem ovf:id=\"{}\">", e(&p.name)),
    );
    nl(&mut x, 2, "<Info>A virtual machine</Info>");
    nl(&mut x, 2, &format!("<Name>{}</Name>", e(&p.name)));
    nl(
        &mut x,
        2,
        &format!(
            "<OperatingSystemSection ovf:id=\"{}\" vmw:osType=\"{}\">",
            p.os_id,
            e(&p.os_type)
        ),
    );
    nl(
        &mut x,
        3,
        "<Info>The kind of installed guest operating system</Info>",
    );
    nl(&mut x, 2, "</OperatingSystemSection>");
    nl(&mut x, 2, "<VirtualHardwareSection>");
    nl(&mut x, 3, "<Info>Virtual hardware requirements</Info>");
    nl(&mut x, 3, "<System>");
    nl(
        &mut x,
        4,
        "<vssd:ElementName>Virtual Hardware Family</vssd:ElementName>",
    );
    nl(&mut x, 4, "<vssd:InstanceID>0</vssd:InstanceID>");
    nl(
        &mut x,
        4,
        &format!(
            "<vssd:VirtualSystemIdentifier>{}</vssd:VirtualSystemIdentifier>",
            e(&p.name)
        ),
    );
    nl(
        &mut x,
        4,
        &format!(
            "<vssd:VirtualSystemType>{}</vssd:VirtualSystemType>",
            e(&p.virtual_system_type)
        ),
    );
    nl(&mut x, 3, "</System>");
    // rasd elements in the schema's (alphabetical) order.
    let item = |x: &mut String, fields: &[(&str, String)]| {
        nl(x, 3, "<Item>");
        for (k, v) in fields {
            nl(x, 4, &format!("<rasd:{k}>{}</rasd:{k}>", e(v)));
        }
        nl(x, 3, "</Item>");
    };
    item(
        &mut x,
        &[
            ("AllocationUnits", "hertz * 10^6".into()),
            ("Description", "Number of Virtual CPUs".into()),
            ("ElementName", format!("{} virtual CPU(s)", p.cpus)),
            ("InstanceID", "1".into()),
            ("ResourceType", "3".into()),
            ("VirtualQuantity", p.cpus.to_string()),
        ],
    );
    item(
        &mut x,
        &[
            ("AllocationUnits", "byte * 2^20".into()),
            ("Description", "Memory Size".into()),
            ("ElementName", format!("{}MB of memory", p.memory_mb)),
            ("InstanceID", "2".into()),
            ("ResourceType", "4".into()),
            ("VirtualQuantity", p.memory_mb.to_string()),
        ],
    );
    item(
        &mut x,
        &[
            ("Address", "0".into()),
            ("Description", "SCSI Controller".into()),
            ("ElementName", "SCSI Controller 0".into()),
            ("InstanceID", "3".into()),
            ("ResourceSubType", "lsilogic".into()),
            ("ResourceType", "6".into()),
        ],
    );
    item(
        &mut x,
        &[
            ("AddressOnParent", "0".into()),
            ("ElementName", "Hard Disk 1".into()),
            ("HostResource", "ovf:/disk/vmdisk1".into()),
            ("InstanceID", "4".into()),
            ("Parent", "3".into()),
            ("ResourceType", "17".into()),
        ],
    );
    item(
        &mut x,
        &[
            ("AddressOnParent", "7".into()),
            ("AutomaticAllocation", "true".into()),
            ("Connection", "VM Network".into()),
            (
                "Description",
                format!("{} ethernet adapter on \"VM Network\"", p.nic),
            ),
            ("ElementName", "Network adapter 1".into()),
            ("InstanceID", "5".into()),
            ("ResourceSubType", p.nic.clone()),
            ("ResourceType", "10".into()),
        ],
    );
    if p.efi {
        nl(
            &mut x,
            3,
            "<vmw:Config ovf:required=\"false\" vmw:key=\"firmware\" vmw:value=\"efi\"/>",
        );
    }
    nl(&mut x, 2, "</VirtualHardwareSection>");
    nl(&mut x, 2, "<ProductSection>");
    nl(
        &mut x,
        3,
        "<Info>Information about the installed software</Info>",
    );
    nl(&mut x, 3, &format!("<Product>{}</Product>", e(&p.product)));
    if let Some(v) = &p.vendor {
        nl(&mut x, 3, &format!("<Vendor>{}</Vendor>", e(v)));
    }
    nl(&mut x, 3, &format!("<Version>{}</Version>", e(&p.version)));
    nl(
        &mut x,
        3,
        &format!("<FullVersion>{}</FullVersion>", e(&p.version)),
    );
    if let Some(u) = &p.url {
        nl(&mut x, 3, &format!("<ProductUrl>{}</ProductUrl>", e(u)));
        nl(&mut x, 3, &format!("<VendorUrl>{}</VendorUrl>", e(u)));
    }
    nl(&mut x, 2, "</ProductSection>");
    if let Some(d) = &p.description {
        nl(&mut x, 2, "<AnnotationSection>");
        nl(&mut x, 3, "<Info>A human-readable annotation</Info>");
        nl(&mut x, 3, &format!("<Annotation>{}</Annotation>", e(d)));
        nl(&mut x, 2, "</AnnotationSection>");
    }
    nl(&mut x, 1, "</VirtualSystem>");
    x.push_str("</Envelope>\n");
    x
}

/// A `References/File`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRef {
    pub id: String,
    pub href: String,
    pub size: Option<u64>,
}

/// A `DiskSection/Disk`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    pub disk_id: String,
    pub file_ref: Option<String>,
    /// Capacity in bytes (after `capacityAllocationUnits`).
    pub capacity: Option<u64>,
    pub format: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub files: Vec<FileRef>,
    pub disks: Vec<Disk>,
}

/// `byte`, `byte * 2^N`, `byte * 1024^N`, `MegaBytes`... → multiplier.
pub fn allocation_units(u: &str) -> Option<u64> {
    let u: String = u.chars().filter(|c| !c.is_whitespace()).collect();
    match u.as_str() {
        "" | "byte" => return Some(1),
        "KiloBytes" | "KB" => return Some(1 << 10),
        "MegaBytes" | "MB" => return Some(1 << 20),
        "GigaBytes" | "GB" => return Some(1 << 30),
        _ => {}
    }
    let rest = u.strip_prefix("byte*")?;
    let (base, exp) = rest.split_once('^')?;
    let (base, exp) = (base.parse::<u64>().ok()?, exp.parse::<u32>().ok()?);
    base.checked_pow(exp)
}

/// Parse the descriptor: must be well-formed XML whose root is `Envelope` in
/// the OVF 1.x namespace. Returns the file references and disks.
pub fn inspect(xml: &str) -> Result<Facts> {
    let mut r = NsReader::from_str(xml);
    r.config_mut().check_end_names = true;
    r.config_mut().check_comments = true;
    let mut facts = Facts::default();
    let mut depth = 0usize;
    let mut root_seen = false;
    let mut stack: Vec<String> = Vec::new();
    loop {
        let at = r.buffer_position();
        let (ns, ev) = r.read_resolved_event().with_context(|| {
            format!("the OVF descriptor is not well-formed XML (after byte {at})")
        })?;
        let (start, empty) = match &ev {
            Event::Start(s) => (Some(s.clone()), false),
            Event::Empty(s) => (Some(s.clone()), true),
            Event::End(_) => {
                depth -= 1;
                stack.pop();
                continue;
            }
            Event::Eof => break,
            Event::Text(t) if depth == 0 && !t.chars().all(char::is_whitespace) => {
                bail!("the OVF descriptor has text outside the root element")
            }
            _ => continue,
        };
        let s = start.expect("a start tag");
        let local = s.local_name().as_ref().to_string();
        let in_ovf = matches!(&ns, ResolveResult::Bound(n) if n.as_ref() == NS_OVF);
        if depth == 0 {
            if root_seen {
                bail!("the OVF descriptor has more than one root element");
            }
            root_seen = true;
            if local != "Envelope" || !in_ovf {
                bail!(
                    "the OVF root element is `{local}` in namespace {:?}, not `Envelope` in {NS_OVF} (OVF 1.x)",
                    match &ns {
                        ResolveResult::Bound(n) => n.as_ref().to_string(),
                        _ => "(none)".into(),
                    }
                );
            }
        }
        // Attributes in the ovf namespace, by local name.
        let mut attrs = std::collections::BTreeMap::new();
        for a in s.attributes() {
            let a = a.context("malformed attribute in the OVF descriptor")?;
            let (ans, aname) = r.resolver().resolve_attribute(a.key);
            let ovf_attr = matches!(&ans, ResolveResult::Bound(n) if n.as_ref() == NS_OVF);
            if ovf_attr {
                let v = a
                    .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                    .context("bad attribute value in the OVF descriptor")?;
                attrs.insert(aname.as_ref().to_string(), v.into_owned());
            }
        }
        let parent = stack.last().map(String::as_str);
        if in_ovf && local == "File" && parent == Some("References") {
            let size =
                match attrs.get("size") {
                    Some(v) => Some(v.trim().parse::<u64>().with_context(|| {
                        format!("References/File ovf:size `{v}` is not a number")
                    })?),
                    None => None,
                };
            facts.files.push(FileRef {
                id: attrs.get("id").cloned().unwrap_or_default(),
                href: attrs.get("href").cloned().unwrap_or_default(),
                size,
            });
        }
        if in_ovf && local == "Disk" && parent == Some("DiskSection") {
            let units = attrs
                .get("capacityAllocationUnits")
                .map(String::as_str)
                .unwrap_or("byte");
            let mult = allocation_units(units).with_context(|| {
                format!("Disk ovf:capacityAllocationUnits `{units}` is not understood")
            })?;
            let capacity = match attrs.get("capacity") {
                Some(v) => Some(
                    v.trim()
                        .parse::<u64>()
                        .ok()
                        .and_then(|c| c.checked_mul(mult))
                        .with_context(|| {
                            format!("Disk ovf:capacity `{v}` is not a number of {units}")
                        })?,
                ),
                None => None,
            };
            facts.disks.push(Disk {
                disk_id: attrs.get("diskId").cloned().unwrap_or_default(),
                file_ref: attrs.get("fileRef").cloned(),
                capacity,
                format: attrs.get("format").cloned(),
            });
        }
        if !empty {
            depth += 1;
            stack.push(if in_ovf {
                local
            } else {
                format!("{{other}}{local}")
            });
        }
    }
    if !root_seen {
        bail!("the OVF descriptor has no root element");
    }
    if depth != 0 {
        bail!("the OVF descriptor ends inside an element");
    }
    Ok(facts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> Params {
        Params {
            name: "demo".into(),
            product: "A & B <appliance>".into(),
            vendor: Some("\"kiln\"".into()),
            version: "1.0".into(),
            url: Some("https://x.example/?a=1&b=2".into()),
            description: Some("d".into()),
            os_type: "debian12_64Guest".into(),
            os_id: 96,
            cpus: 2,
            memory_mb: 4096,
            nic: "E1000".into(),
            virtual_system_type: "vmx-14".into(),
            efi: true,
            disk_file: "demo-disk1.vmdk".into(),
        }
    }

    #[test]
    fn render_escapes_and_reads_back() {
        let x = render(
            &params(),
            DiskFacts {
                file_size: 123,
                capacity: 1 << 30,
            },
        );
        assert!(x.contains("A &amp; B &lt;appliance&gt;"), "{x}");
        assert!(x.contains("?a=1&amp;b=2"));
        assert!(x.contains("vmw:key=\"firmware\" vmw:value=\"efi\""));
        let f = inspect(&x).unwrap();
        assert_eq!(
            f.files,
            [FileRef {
                id: "file1".into(),
                href: "demo-disk1.vmdk".into(),
                size: Some(123)
            }]
        );
        assert_eq!(f.disks[0].capacity, Some(1 << 30));
        assert_eq!(f.disks[0].file_ref.as_deref(), Some("file1"));
        assert_eq!(f.disks[0].format.as_deref(), Some(VMDK_STREAM_FORMAT));
        let no_efi = render(
            &Params {
                efi: false,
                ..params()
            },
            DiskFacts {
                file_size: 1,
                capacity: 1,
            },
        );
        assert!(!no_efi.contains("firmware"));
    }

    #[test]
    fn inspect_rejects() {
        assert!(inspect("<Envelope xmlns=\"http://schemas.dmtf.org/ovf/envelope/2\"/>").is_err());
        assert!(inspect(
            "<Envelope xmlns=\"http://schemas.dmtf.org/ovf/envelope/1\"><a></b></Envelope>"
        )
        .is_err());
        assert!(inspect("").is_err());
        let ok = "<Envelope xmlns=\"http://schemas.dmtf.org/ovf/envelope/1\" xmlns:ovf=\"http://schemas.dmtf.org/ovf/envelope/1\">\
                  <DiskSection><Disk ovf:diskId=\"d\" ovf:capacity=\"2\" ovf:capacityAllocationUnits=\"byte * 2^30\"/></DiskSection></Envelope>";
        assert_eq!(inspect(ok).unwrap().disks[0].capacity, Some(2 << 30));
    }

    #[test]
    fn units() {
        assert_eq!(allocation_units("byte"), Some(1));
        assert_eq!(allocation_units("byte * 2^20"), Some(1 << 20));
        assert_eq!(allocation_units("byte * 1024^3"), Some(1 << 30));
        assert_eq!(allocation_units("furlongs"), None);
    }
}
