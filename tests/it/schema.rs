//! The JSON Schema for editors: the committed file is what `handoff schema`
//! prints; every example flow, mock and test file validates against it; and
//! broken files with unknown keys or wrong types do not.

use crate::common::{handoff, text};
use serde_json::Value;

fn schema() -> jsonschema::Validator {
    let text = std::fs::read_to_string("schema/handoff.schema.json").unwrap();
    let schema: Value = serde_json::from_str(&text).unwrap();
    jsonschema::draft202012::new(&schema).unwrap()
}

fn yaml(path: &str) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn files(dir: &str, keep: impl Fn(&str) -> bool) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path().to_string_lossy().into_owned())
        .filter(|p| p.ends_with(".yaml") && keep(p))
        .collect();
    out.sort();
    out
}

#[test]
fn the_committed_schema_is_what_handoff_schema_prints() {
    let out = handoff(&["schema"], &[]);
    assert_eq!(out.status.code(), Some(0));
    let committed = std::fs::read_to_string("schema/handoff.schema.json").unwrap();
    assert!(
        text(&out.stdout) == committed,
        "schema/handoff.schema.json is stale: run `handoff schema > schema/handoff.schema.json`"
    );
    let schema: Value = serde_json::from_str(&committed).unwrap();
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    // Editors show these on hover.
    let patch = &schema["$defs"]["step"]["oneOf"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["title"] == "patch_task")
        .unwrap()["properties"]["patch_task"];
    assert!(
        patch["description"]
            .as_str()
            .unwrap()
            .contains("assignment")
    );
    assert!(patch["properties"]["assignee"]["description"].is_string());
    assert_eq!(
        patch["required"],
        serde_json::json!(["base_url", "task_id", "outcome"])
    );
}

#[test]
fn every_example_flow_mock_and_test_file_validates() {
    let validator = schema();
    // An Arazzo document is the OpenAPI Initiative's format, not ours.
    let mut all = files("flows", |p| !p.ends_with(".arazzo.yaml"));
    all.extend(files("docs/tutorial", |_| true));
    all.extend(files("tests/files", |p| {
        !p.contains("bad-templates")
            && !p.contains("three-mistakes")
            && !p.ends_with("/inputs.yaml")
    }));
    for dir in [
        "tests/files/durable",
        "tests/files/serve",
        "tests/files/hostile",
    ] {
        all.extend(files(dir, |_| true));
    }
    assert!(all.len() > 30, "{all:?}");
    for path in &all {
        let value = yaml(path);
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{path}: {errors:#?}");
    }
}

#[test]
fn broken_files_with_unknown_keys_or_wrong_types_fail() {
    let validator = schema();
    let broken = [
        "kind_misspelt",
        "kind_unknown",
        "kind_missing",
        "kind_two_in_one_step",
        "type_max_steps_negative",
        "type_steps_is_a_map",
        "type_steps_empty",
        "type_step_is_a_string",
        "type_step_id_is_a_number",
        "type_unknown_field_type",
        "type_flow_name_is_a_list",
        "type_headers_is_a_number",
        "type_http_accept",
        "yaml_document_is_a_list",
        "yaml_document_is_a_scalar",
    ];
    for name in broken {
        let path = format!("tests/broken/{name}.yaml");
        let value = yaml(&path);
        assert!(
            !validator.is_valid(&value),
            "{path} validates, but it is broken"
        );
    }
    // A mock and a test file with a misspelt key, and a case with no `expect`.
    for broken in [
        "responses:\n  - step: find_task\n    stauts: 200\n",
        "cases:\n  - name: a\n    expect: { stauts: succeeded }\n",
        "cases:\n  - name: a\n    set: { instance_id: x }\n",
        "cases:\n  - name: a\n    expect: { status: passed }\n",
    ] {
        let value: Value = serde_saphyr::from_str(broken).unwrap();
        assert!(!validator.is_valid(&value), "{broken} validates");
    }
}
