//! Baked container images that the appliance runs as services
//! (`payloads.images[].run`): the systemd unit kiln writes for each image.
//! (The runtime it installs into roots built from packages is
//! [`crate::recipe::payloads::RUNTIME_PACKAGES`].)
//!
//! Loading is the appliance's business (its bootstrap loads the verified
//! archives into podman's store, offline); the unit runs what is loaded,
//! never pulls, and restarts it when it fails.

use crate::recipe::payloads::{ImagePayload, RunSpec};

/// Where the runtime's binary lives; the unit is skipped (not failed) on an
/// image without it, e.g. a vendor image that does not carry podman.
pub const PODMAN: &str = "/usr/bin/podman";

/// A container service: what the unit needs to know.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Service {
    /// The image's payload name; also the container's and the unit's name.
    pub name: String,
    /// `repo:tag` the archive loads as.
    pub reference: String,
    pub port: u16,
    pub container_port: u16,
    pub after: Vec<String>,
}

impl Service {
    pub fn of(img: &ImagePayload, run: &RunSpec) -> Service {
        Service {
            name: img.name.clone(),
            reference: img.reference().to_string(),
            port: run.port,
            container_port: run
                .container_port
                .expect("run.container_port is filled by Recipe::resolve"),
            after: run.after.clone(),
        }
    }

    /// The unit's file name.
    pub fn unit_name(&self) -> String {
        format!("{}.service", self.name)
    }

    /// The unit file: runs the loaded image (never pulls), publishes the
    /// port, restarts on failure. Ordered after `network.target` only: the
    /// bridge podman creates needs no configured uplink, and waiting for
    /// `network-online.target` would stall an appliance without one.
    pub fn unit(&self) -> String {
        let Service {
            name,
            reference,
            port,
            container_port,
            after,
        } = self;
        let mut order = vec!["network.target".to_string()];
        order.extend(after.iter().cloned());
        let order = order.join(" ");
        let wants = if after.is_empty() {
            String::new()
        } else {
            format!("Requires={}\n", after.join(" "))
        };
        format!(
            "# Written by kiln for payloads.images `{name}` (run:). The image is loaded into\n\
             # podman's store at boot from its baked archive; this unit never pulls.\n\
             [Unit]\n\
             Description={name} container ({reference})\n\
             {wants}\
             After={order}\n\
             ConditionPathExists={PODMAN}\n\
             \n\
             [Service]\n\
             Environment=PODMAN_SYSTEMD_UNIT=%n\n\
             ExecStart={PODMAN} run --name {name} --replace --rm --pull=never \
             --publish {port}:{container_port} {reference}\n\
             ExecStop={PODMAN} stop --ignore --time 10 {name}\n\
             Restart=on-failure\n\
             RestartSec=5\n\
             TimeoutStartSec=300\n\
             \n\
             [Install]\n\
             WantedBy=multi-user.target\n"
        )
    }
}

/// The services of the recipe's images that have `run:`, in recipe order.
pub fn services(images: &[ImagePayload]) -> Vec<Service> {
    images
        .iter()
        .filter_map(|i| i.run.as_ref().map(|r| Service::of(i, r)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_runs_the_loaded_image_after_its_loader() {
        let s = Service {
            name: "web".into(),
            reference: "web:1".into(),
            port: 80,
            container_port: 8080,
            after: vec!["demo-bootstrap.service".into()],
        };
        let u = s.unit();
        assert_eq!(s.unit_name(), "web.service");
        for want in [
            "Requires=demo-bootstrap.service\n",
            "After=network.target demo-bootstrap.service\n",
            "ConditionPathExists=/usr/bin/podman\n",
            "ExecStart=/usr/bin/podman run --name web --replace --rm --pull=never --publish 80:8080 web:1\n",
            "Restart=on-failure\n",
            "WantedBy=multi-user.target\n",
        ] {
            assert!(u.contains(want), "{want:?} not in:\n{u}");
        }
        // It parses as a unit kiln itself would accept.
        let d = tempfile::tempdir().unwrap();
        let p = camino::Utf8Path::from_path(d.path())
            .unwrap()
            .join("web.service");
        std::fs::write(&p, &u).unwrap();
        let parsed = crate::stage::parse_unit(&p).unwrap();
        assert_eq!(parsed.wanted_by, ["multi-user.target"]);
        let no_after = Service { after: vec![], ..s }.unit();
        assert!(!no_after.contains("Requires="), "{no_after}");
        assert!(no_after.contains("After=network.target\n"), "{no_after}");
    }

    /// `run:` in the demo recipe resolves its container port from the
    /// image's one exposed TCP port; without one, or with a bad `after`,
    /// the recipe is refused naming the image and the field.
    #[test]
    fn run_settings_resolve_or_are_refused() {
        let root = camino::Utf8Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap();
        let file = root.join("recipes/demo.yaml");
        let demo = std::fs::read_to_string(&file).unwrap();
        let resolve = |text: &str| {
            crate::recipe::parse(text, &file)
                .and_then(|r| r.resolve(&file, root))
                .map_err(|e| format!("{e:#}"))
        };
        let r = resolve(&demo).unwrap();
        let s = services(&r.recipe.payloads.images);
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].port, s[0].container_port), (80, 8080));

        assert!(demo.contains("      exposed_ports: [\"8080\"]\n"));
        let e = resolve(&demo.replace("      exposed_ports: [\"8080\"]\n", "")).unwrap_err();
        assert!(
            e.contains("image `demo-web`: run.container_port is not set")
                && e.contains("exposes 0 TCP ports"),
            "{e}"
        );
        let two = demo.replace(
            "exposed_ports: [\"8080\"]",
            "exposed_ports: [\"8080\", \"9090\"]",
        );
        let e = resolve(&two).unwrap_err();
        assert!(e.contains("exposes 2 TCP ports"), "{e}");
        let set = two.replace(
            "        port: 80\n",
            "        port: 80\n        container_port: 9090\n",
        );
        let r = resolve(&set).unwrap();
        assert_eq!(services(&r.recipe.payloads.images)[0].container_port, 9090);
        let e = resolve(&demo.replace("after: [demo-bootstrap.service]", "after: [bootstrap]"))
            .unwrap_err();
        assert!(
            e.contains("run.after entry `bootstrap` is not a systemd unit name"),
            "{e}"
        );
    }
}
