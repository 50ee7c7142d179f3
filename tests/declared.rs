//! The signature read from a model file without a session (`model::declared`) is the one ONNX Runtime reports,
//! for every model of the repository and the test fixtures (tensors of many datatypes, dynamic and symbolic
//! dimensions, sklearn's ZipMap sequence-of-map output, string tensors), and the open-nsfw CNN when it is fetched.

use std::path::{Path, PathBuf};

use sluice::model::{declared, LoadOptions, ModelVersion, VersionSettings};

fn onnx_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            onnx_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "onnx") {
            out.push(path);
        }
    }
}

#[test]
fn declared_signatures_equal_the_sessions() {
    let env = sluice::runtime::load(None)
        .expect("ONNX Runtime (run scripts/fetch-onnxruntime.sh)")
        .1;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    onnx_files(&root.join("models"), &mut files);
    onnx_files(&root.join("tests/fixtures"), &mut files);
    files.extend(std::env::var_os("SLUICE_TEST_CNN").map(PathBuf::from));
    let mut compared = 0;
    for file in &files {
        let loaded = ModelVersion::load(
            &env,
            "m",
            1,
            file,
            &VersionSettings::default(),
            &LoadOptions::default(),
        );
        let declared = declared::read(file);
        match loaded {
            Ok(version) => {
                assert_eq!(
                    declared.as_ref(),
                    Ok(&version.signature),
                    "{}",
                    file.display()
                );
                compared += 1;
            }
            // A fixture ONNX Runtime refuses: the declared reader must not panic on it.
            Err(e) => eprintln!(
                "{}: not loadable ({e}); declared: {declared:?}",
                file.display()
            ),
        }
    }
    assert!(
        compared >= 8,
        "only {compared} models compared of {}",
        files.len()
    );
}
