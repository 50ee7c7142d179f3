//! A version's model card (`<version>/card.toml`) and its checksum check.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a model version is, who owns it and how it was evaluated.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelCard {
    pub description: Option<String>,
    pub intended_use: Option<String>,
    pub limitations: Option<String>,
    pub training_data: Option<String>,
    pub owner: Option<String>,
    /// Where it came from: a training run id, a commit, a pipeline.
    pub source: Option<String>,
    /// Evaluation metrics, e.g. `test_accuracy = 0.95`.
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    /// Hex sha256 of `model.onnx`; when set, a file that does not match is refused.
    pub sha256: Option<String>,
}

/// Reads `card.toml` next to `model_path` (none is fine) and verifies the checksum it names.
pub fn load(model_path: &Path) -> Result<Option<ModelCard>, String> {
    let path = model_path.with_file_name("card.toml");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let card: ModelCard =
        toml::from_str(&text).map_err(|e| format!("{}: {}", path.display(), e.message()))?;
    if let Some(expected) = &card.sha256 {
        let bytes =
            std::fs::read(model_path).map_err(|e| format!("{}: {e}", model_path.display()))?;
        let actual = sha256_hex(&bytes);
        if !actual.eq_ignore_ascii_case(expected.trim()) {
            return Err(format!(
                "checksum mismatch: card.toml says sha256 {expected}, {} has {actual}",
                model_path.display()
            ));
        }
    }
    Ok(Some(card))
}

/// Writes the sha256 of `model_path` into the `card.toml` next to it when the card names none (a card made by a
/// registry that keeps no checksum), so the card says which file it describes.
pub fn complete(model_path: &Path) -> Result<(), String> {
    let path = model_path.with_file_name("card.toml");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(());
    };
    let mut card: ModelCard =
        toml::from_str(&text).map_err(|e| format!("{}: {}", path.display(), e.message()))?;
    if card.sha256.is_some() {
        return Ok(());
    }
    let bytes = std::fs::read(model_path).map_err(|e| format!("{}: {e}", model_path.display()))?;
    card.sha256 = Some(sha256_hex(&bytes));
    let text = toml::to_string(&card).map_err(|e| e.to_string())?;
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The hex sha256 of `bytes`, as cards name it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cards_load_and_checksums_are_enforced() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("model.onnx");
        std::fs::write(&model, b"abc").unwrap();
        assert_eq!(load(&model), Ok(None));
        // sha256("abc")
        let good = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        std::fs::write(
            dir.path().join("card.toml"),
            format!("owner = \"me\"\nsha256 = \"{good}\"\n[metrics]\nauc = 0.9\n"),
        )
        .unwrap();
        let card = load(&model).unwrap().unwrap();
        assert_eq!(
            (card.owner.as_deref(), card.metrics["auc"]),
            (Some("me"), 0.9)
        );
        std::fs::write(&model, b"abd").unwrap();
        assert!(load(&model).unwrap_err().contains("checksum mismatch"));
        std::fs::write(dir.path().join("card.toml"), "ownr = 1\n").unwrap();
        assert!(load(&model).unwrap_err().contains("unknown field"));
    }

    #[test]
    fn a_card_without_a_checksum_is_completed_with_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("model.onnx");
        std::fs::write(&model, b"abc").unwrap();
        assert_eq!(complete(&model), Ok(()), "no card: nothing to do");
        assert!(!dir.path().join("card.toml").exists());
        std::fs::write(dir.path().join("card.toml"), "owner = \"me\"\n").unwrap();
        complete(&model).unwrap();
        let card = load(&model).unwrap().unwrap();
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(
            (card.owner.as_deref(), card.sha256.as_deref()),
            (Some("me"), Some(abc))
        );
        // A checksum the card names stays: a file that does not match it is still refused.
        std::fs::write(&model, b"abd").unwrap();
        complete(&model).unwrap();
        assert!(load(&model).unwrap_err().contains("checksum mismatch"));
    }
}
