//! Volume capabilities: which the plugin takes (block or mount, the five GA
//! access modes; several nodes only with a `multiattach` volume type), and
//! ValidateVolumeCapabilities.

use std::collections::BTreeMap;

use scoria_cli::connect::Api;
use scoria_proto::v1 as pb;

use crate::{
    error::{Error, Result},
    proto::{
        ValidateVolumeCapabilitiesRequest, ValidateVolumeCapabilitiesResponse, VolumeCapability,
        validate_volume_capabilities_response::Confirmed, volume_capability::access_mode::Mode,
    },
};

/// The extra spec that lets a Scoria volume be attached to several hosts.
const MULTIATTACH_SPEC: &str = "multiattach";

/// What a list of capabilities asks of a volume.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    /// Some capability wants several nodes.
    pub multi_node: bool,
    /// Some capability mounts a filesystem (a grown volume needs NodeExpandVolume).
    pub mount: bool,
}

/// Checks one capability (`field` names it in errors): an access type and a
/// known, GA access mode.
pub fn check(field: &'static str, capability: &VolumeCapability) -> Result<Needs> {
    use crate::proto::volume_capability::AccessType;
    let mount = match &capability.access_type {
        None => {
            return Err(Error::invalid(
                field,
                "access_type (block or mount) is required",
            ));
        }
        Some(AccessType::Block(_)) => false,
        Some(AccessType::Mount(_)) => true,
    };
    let mode = capability
        .access_mode
        .as_ref()
        .ok_or_else(|| Error::invalid(field, "access_mode is required"))?;
    let multi_node = match Mode::try_from(mode.mode) {
        Ok(Mode::SingleNodeWriter | Mode::SingleNodeReaderOnly) => false,
        Ok(
            Mode::MultiNodeReaderOnly | Mode::MultiNodeSingleWriter | Mode::MultiNodeMultiWriter,
        ) => true,
        Ok(Mode::Unknown) => return Err(Error::invalid(field, "access_mode.mode is required")),
        Ok(other @ (Mode::SingleNodeSingleWriter | Mode::SingleNodeMultiWriter)) => {
            return Err(Error::Unsupported(format!(
                "{field}: access mode {} is not supported (no SINGLE_NODE_MULTI_WRITER capability)",
                other.as_str_name()
            )));
        }
        Err(_) => {
            return Err(Error::invalid(
                field,
                format!("unknown access mode {}", mode.mode),
            ));
        }
    };
    Ok(Needs { multi_node, mount })
}

/// Checks a required, non-empty list of capabilities.
pub fn check_all(field: &'static str, capabilities: &[VolumeCapability]) -> Result<Needs> {
    if capabilities.is_empty() {
        return Err(Error::Missing(field));
    }
    let mut needs = Needs::default();
    for capability in capabilities {
        let one = check(field, capability)?;
        needs.multi_node |= one.multi_node;
        needs.mount |= one.mount;
    }
    Ok(needs)
}

/// The extra specs of volume type `name` (empty: the default type, if any);
/// an unknown type is refused naming `parameters`.
pub async fn extra_specs(api: &Api, name: &str) -> Result<BTreeMap<String, String>> {
    Ok(if name.is_empty() {
        let types = api
            .types()
            .list_volume_types(pb::ListVolumeTypesRequest {})
            .await
            .map_err(Error::scoria("ListVolumeTypes"))?
            .into_inner()
            .volume_types;
        types
            .into_iter()
            .find(|t| t.is_default)
            .map(|t| t.extra_specs)
            .unwrap_or_default()
    } else {
        let request = pb::GetVolumeTypeRequest {
            id_or_name: name.to_owned(),
        };
        match api.types().get_volume_type(request).await {
            Ok(t) => t.into_inner().extra_specs,
            Err(s) if s.code() == tonic::Code::NotFound => {
                return Err(Error::invalid(
                    "parameters",
                    format!("volume type {name:?} does not exist"),
                ));
            }
            Err(s) => return Err(Error::scoria(format!("GetVolumeType {name:?}"))(s)),
        }
    })
}

/// Whether volume type `name` allows several attachments (empty: the default type).
pub async fn multiattach(api: &Api, name: &str) -> Result<bool> {
    let specs = extra_specs(api, name).await?;
    Ok(specs.get(MULTIATTACH_SPEC).is_some_and(|v| is_true(v)))
}

/// Cinder's `<is> True`.
fn is_true(value: &str) -> bool {
    value
        .trim()
        .to_ascii_lowercase()
        .strip_prefix("<is>")
        .is_some_and(|rest| rest.trim() == "true")
}

/// Refuses several nodes on a type that cannot attach more than once.
pub async fn require_fit(api: &Api, needs: Needs, volume_type: &str) -> Result<()> {
    if needs.multi_node && !multiattach(api, volume_type).await? {
        return Err(Error::Unsupported(format!(
            "volume_capabilities: a multi-node access mode needs a volume type with \
             multiattach = \"<is> True\"; type {volume_type:?} has none"
        )));
    }
    Ok(())
}

/// ValidateVolumeCapabilities: confirmed when the volume can be used with
/// every capability asked (and the parameters name its type, if any).
pub async fn validate(
    api: &Api,
    volume: &pb::Volume,
    request: ValidateVolumeCapabilitiesRequest,
) -> Result<ValidateVolumeCapabilitiesResponse> {
    let unconfirmed = |message: String| ValidateVolumeCapabilitiesResponse {
        confirmed: None,
        message,
    };
    let needs = match check_all("volume_capabilities", &request.volume_capabilities) {
        Ok(needs) => needs,
        Err(Error::Unsupported(message)) => return Ok(unconfirmed(message)),
        Err(e) => return Err(e),
    };
    if let Some(wanted) = request.parameters.get("type")
        && *wanted != volume.volume_type
    {
        return Ok(unconfirmed(format!(
            "the volume's type is {:?}, not {wanted:?}",
            volume.volume_type
        )));
    }
    match require_fit(api, needs, &volume.volume_type).await {
        Ok(()) => {}
        Err(Error::Unsupported(message)) => return Ok(unconfirmed(message)),
        Err(e) => return Err(e),
    }
    if !request.mutable_parameters.is_empty() {
        return Ok(unconfirmed(
            "mutable_parameters are not supported (no MODIFY_VOLUME)".into(),
        ));
    }
    Ok(ValidateVolumeCapabilitiesResponse {
        confirmed: Some(Confirmed {
            volume_context: request.volume_context,
            volume_capabilities: request.volume_capabilities,
            parameters: request.parameters,
            mutable_parameters: Default::default(),
        }),
        message: String::new(),
    })
}
