//! What a machine runs: its command and its environment.
//!
//! The command is chosen like Fly chooses what to exec in the image, with
//! the local mapping standing in for the image's own ENTRYPOINT/CMD:
//!
//! 1. `config.init.exec`, verbatim (the host filesystem plays the rootfs);
//! 2. `config.init.entrypoint` followed by `config.init.cmd` (either may be
//!    absent; the image's own ENTRYPOINT/CMD are unknown to the mock);
//! 3. the same fields of `config.processes[0]` (what Fly Launch writes);
//! 4. `MockConfig::images[config.image]`;
//! 5. `MockConfig::default_command`.

use std::collections::BTreeMap;

use machines::{Init, Machine};

use crate::config::MockConfig;

/// Fly's memory for a machine without `guest` (shared-cpu-1x).
pub const DEFAULT_MEMORY_MB: u32 = 256;

/// The command for `machine`, or why there is none.
pub fn command(machine: &Machine, config: &MockConfig) -> Result<Vec<String>, String> {
    let from_init = machine.config.init.as_ref().and_then(init_command);
    let from_process = || {
        let process = machine.config.extra.get("processes")?.get(0)?;
        let init: Init = serde_json::from_value(process.clone()).ok()?;
        init_command(&init)
    };
    from_init
        .or_else(from_process)
        .or_else(|| config.images.get(&machine.config.image).cloned())
        .or_else(|| config.default_command.clone())
        .filter(|command| !command.is_empty())
        .ok_or_else(|| {
            format!(
                "no command for image {:?}: set config.init.exec, or map the image to a local command (--image) or give a default command",
                machine.config.image
            )
        })
}

fn init_command(init: &Init) -> Option<Vec<String>> {
    if let Some(exec) = init.exec.as_ref().filter(|e| !e.is_empty()) {
        return Some(exec.clone());
    }
    let mut command = init.entrypoint.clone().unwrap_or_default();
    command.extend(init.cmd.clone().unwrap_or_default());
    (!command.is_empty()).then_some(command)
}

/// Memory of the machine in MB (`guest.memory_mb`, or Fly's default).
pub fn memory_mb(machine: &Machine) -> u32 {
    machine
        .config
        .guest
        .as_ref()
        .map_or(DEFAULT_MEMORY_MB, |g| g.memory_mb)
}

/// The whole environment of a machine's process, as on Fly: the image's
/// (`image_env`), then the app's `secrets` (unless the machine was created
/// with `skip_secrets`: the caller passes none then), then `config.env`
/// (which wins over a secret of the same name: Fly does not document the
/// order), then the variables Fly injects into every machine. The mock's
/// own environment is not inherited.
pub fn environment(
    app: &str,
    machine: &Machine,
    image_env: &BTreeMap<String, String>,
    secrets: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut env = image_env.clone();
    env.extend(secrets.clone());
    env.extend(machine.config.env.clone());
    let fly = [
        ("FLY_APP_NAME", app.to_string()),
        ("FLY_MACHINE_ID", machine.id.clone()),
        ("FLY_ALLOC_ID", machine.id.clone()),
        ("FLY_REGION", machine.region.clone()),
        ("FLY_IMAGE_REF", machine.config.image.clone()),
        ("FLY_MACHINE_VERSION", machine.instance_id.clone()),
        ("FLY_PRIVATE_IP", machine.private_ip.clone()),
        ("FLY_PUBLIC_IP", "::1".to_string()),
        ("FLY_VM_MEMORY_MB", memory_mb(machine).to_string()),
        ("PRIMARY_REGION", machine.region.clone()),
    ];
    env.extend(fly.map(|(k, v)| (k.to_string(), v)));
    if let Some(group) = machine.config.metadata.get("fly_process_group") {
        env.insert("FLY_PROCESS_GROUP".to_string(), group.clone());
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use machines::{MachineConfig, MachineState};

    fn machine(config: serde_json::Value) -> Machine {
        Machine {
            id: "0123456789abcd".into(),
            name: "n".into(),
            state: MachineState::Created,
            region: "lcl".into(),
            instance_id: "01H".into(),
            private_ip: "fdaa::2".into(),
            created_at: String::new(),
            updated_at: String::new(),
            config: serde_json::from_value::<MachineConfig>(config).unwrap(),
            image_ref: None,
            events: vec![],
            host_status: None,
            nonce: None,
        }
    }

    #[test]
    fn command_precedence() {
        let mut config = MockConfig::default();
        config
            .images
            .insert("img".into(), vec!["from-image".into()]);
        config.default_command = Some(vec!["default".into()]);
        let cmd = |c| command(&machine(c), &config).unwrap();
        assert_eq!(
            cmd(serde_json::json!({"image":"img","init":{"exec":["a","b"],"cmd":["c"]}})),
            ["a", "b"]
        );
        assert_eq!(
            cmd(serde_json::json!({"image":"img","init":{"entrypoint":["e"],"cmd":["c"]}})),
            ["e", "c"]
        );
        assert_eq!(
            cmd(
                serde_json::json!({"image":"img","processes":[{"name":"w","entrypoint":["py"],"cmd":["w.py"]}]})
            ),
            ["py", "w.py"]
        );
        assert_eq!(cmd(serde_json::json!({"image":"img"})), ["from-image"]);
        assert_eq!(cmd(serde_json::json!({"image":"other"})), ["default"]);
        config.default_command = None;
        assert!(command(&machine(serde_json::json!({"image":"other"})), &config).is_err());
    }

    #[test]
    fn environment_has_fly_variables() {
        let image = BTreeMap::from([
            ("PATH".to_string(), "/bin".to_string()),
            ("A".to_string(), "from image".to_string()),
        ]);
        let secrets = BTreeMap::from([
            ("A".to_string(), "secret".to_string()),
            ("S".to_string(), "s".to_string()),
        ]);
        let env = environment(
            "app",
            &machine(
                serde_json::json!({"image":"img","env":{"A":"1"},"metadata":{"fly_process_group":"worker"}}),
            ),
            &image,
            &secrets,
        );
        assert_eq!(env["A"], "1", "config.env wins over a secret and the image");
        assert_eq!(env["S"], "s");
        assert_eq!(env["PATH"], "/bin");
        assert_eq!(env["FLY_APP_NAME"], "app");
        assert_eq!(env["FLY_ALLOC_ID"], "0123456789abcd");
        assert_eq!(env["FLY_PROCESS_GROUP"], "worker");
        assert_eq!(env["FLY_VM_MEMORY_MB"], "256");
    }
}
