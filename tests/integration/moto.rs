//! A real S3/DynamoDB-compatible server for the AWS backend tests: moto's
//! server (`make test` installs it into .venv), one process per test, on a
//! free port on 127.0.0.1, killed on drop.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};

/// Credentials and region moto accepts (any static ones do).
pub const REGION: &str = "us-east-1";

pub struct Moto {
    child: Child,
    pub endpoint: String,
}

fn moto_server_path() -> PathBuf {
    if let Some(path) = std::env::var_os("WASMGATE_TEST_MOTO_SERVER") {
        return PathBuf::from(path);
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/moto_server");
    assert!(
        path.exists(),
        "moto's server is not installed: run `make test` (it creates .venv with moto[server]), \
         or set WASMGATE_TEST_MOTO_SERVER to a moto_server binary"
    );
    path
}

impl Moto {
    /// Starts moto on a free port and waits until it listens.
    pub fn start() -> Self {
        let mut child = Command::new(moto_server_path())
            .args(["-H", "127.0.0.1", "-p", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting moto_server");
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let endpoint = loop {
            let line = lines
                .next()
                .expect("moto_server exited before it listened")
                .expect("reading moto's output");
            if let Some(rest) = line.split("Running on ").nth(1) {
                break rest.trim().to_string();
            }
        };
        // moto logs a line per request: keep draining so it never blocks.
        std::thread::spawn(move || for _ in lines {});
        Moto { child, endpoint }
    }

    /// Environment for a `wasmgate` process using this server.
    pub fn env(&self, bucket: &str, table: &str) -> Vec<(&'static str, String)> {
        vec![
            ("WASMGATE_BACKEND", "aws".into()),
            ("WASMGATE_BUCKET", bucket.into()),
            ("WASMGATE_TABLE", table.into()),
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_REGION", REGION.into()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            // moto on a busy CI machine can take more than the 1 s default.
            ("WASMGATE_BACKEND_TIMEOUT_MS", "5000".into()),
        ]
    }

    /// An SDK config pointing at this server (for test setup and raw edits).
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(wasmgate::backend::aws_http_client())
            .endpoint_url(&self.endpoint)
            .region(aws_config::Region::new(REGION))
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "test", "test", None, None, "test",
            ))
            .load()
            .await
    }

    pub async fn s3(&self) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::config::Builder::from(&self.sdk_config().await)
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    pub async fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::new(&self.sdk_config().await)
    }

    /// Creates the bucket and the route table with the documented schema.
    pub async fn create(&self, bucket: &str, table: &str) {
        self.s3()
            .await
            .create_bucket()
            .bucket(bucket)
            .send()
            .await
            .expect("create bucket");
        self.dynamodb()
            .await
            .create_table()
            .table_name(table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attr("route"))
            .attribute_definitions(attr("rev"))
            .key_schema(key("route", KeyType::Hash))
            .key_schema(key("rev", KeyType::Range))
            .send()
            .await
            .expect("create table");
    }

    /// Stops the server (to test a backend outage).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn attr(name: &str) -> AttributeDefinition {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .unwrap()
}

fn key(name: &str, kind: KeyType) -> KeySchemaElement {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(kind)
        .build()
        .unwrap()
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.kill();
    }
}
