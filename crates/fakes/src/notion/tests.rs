//! Tests of the fake Notion against the contract in reference/notion-api.md, through real
//! HTTP: page_size and property checks, auth, version and sharing, filters and pagination with
//! the query cap, value validation and the committed-503, relations past 100 items, the lagging
//! index, connection resets.

use super::*;

async fn call(
    f: &FakeNotion,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut req = client
        .request(method, format!("{}{}", f.api_base(), path))
        .header("Authorization", format!("Bearer {}", f.token()))
        .header("Notion-Version", "2025-09-03");
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("send");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn refuses_page_size_over_100_and_unknown_properties() {
    let f = FakeNotion::start(FakeNotionOptions::default()).await;
    let ds = f.data_source_id();
    let (s, b) = call(
        &f,
        reqwest::Method::POST,
        &format!("/v1/data_sources/{ds}/query"),
        Some(json!({"page_size": 101})),
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(b["code"], "validation_error");
    let filter = json!({"filter": {"property": "Nope", "url": {"equals": "x"}}});
    let (s, b) = call(
        &f,
        reqwest::Method::POST,
        &format!("/v1/data_sources/{ds}/query"),
        Some(filter),
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(
        b["message"],
        "Could not find property with name or id: Nope"
    );
    let body = json!({"parent": {"type": "data_source_id", "data_source_id": ds}, "properties": {"Nope": {"url": "x"}}});
    let (s, b) = call(&f, reqwest::Method::POST, "/v1/pages", Some(body)).await;
    assert_eq!(s, 400);
    assert_eq!(b["message"], "Nope is not a property that exists.");
    assert_eq!(f.pages().len(), 0);
}

#[tokio::test]
async fn checks_auth_version_and_sharing() {
    let f = FakeNotion::start(FakeNotionOptions::default()).await;
    let client = reqwest::Client::new();
    let r = client
        .get(format!("{}/v1/users/me", f.api_base()))
        .header("Notion-Version", "2025-09-03")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = client
        .get(format!("{}/v1/users/me", f.api_base()))
        .bearer_auth(f.token())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let r = client
        .get(format!(
            "{}/v1/data_sources/{}",
            f.api_base(),
            f.data_source_id()
        ))
        .bearer_auth(f.token())
        .header("Notion-Version", "2022-06-28")
        .send()
        .await
        .unwrap();
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["code"], "invalid_request_url");
    // A database id where a data source id belongs is a 404.
    let (s, _) = call(
        &f,
        reqwest::Method::GET,
        &format!("/v1/data_sources/{}", f.database_id()),
        None,
    )
    .await;
    assert_eq!(s, 404);
    f.set_shared(false);
    let (s, b) = call(
        &f,
        reqwest::Method::GET,
        &format!("/v1/databases/{}", compact(&f.database_id())),
        None,
    )
    .await;
    assert_eq!(s, 404);
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .contains("shared with your integration")
    );
}

#[tokio::test]
async fn filters_paginate_and_cap() {
    let f = FakeNotion::start(FakeNotionOptions {
        query_result_cap: 25,
        ..Default::default()
    })
    .await;
    for i in 0..30 {
        f.seed_track(
            &format!("t{i}"),
            "a",
            &format!("https://soundcloud.com/a/t{i}"),
        );
    }
    let ds = f.data_source_id();
    let q = format!("/v1/data_sources/{ds}/query");
    let filter = json!({"or": [
        {"property": "SoundCloud URL", "url": {"equals": "https://soundcloud.com/a/t3"}},
        {"and": [{"property": "Title", "title": {"equals": "t4"}}, {"property": "Artist Name", "rich_text": {"equals": "a"}}]},
    ]});
    let (_, b) = call(
        &f,
        reqwest::Method::POST,
        &q,
        Some(json!({"filter": filter})),
    )
    .await;
    assert_eq!(b["results"].as_array().unwrap().len(), 2);
    let too_deep = json!({"or": [{"and": [{"or": []}]}]});
    let (s, _) = call(
        &f,
        reqwest::Method::POST,
        &q,
        Some(json!({"filter": too_deep})),
    )
    .await;
    assert_eq!(s, 400);
    let wrong_type = json!({"property": "SoundCloud URL", "rich_text": {"equals": "x"}});
    let (s, _) = call(
        &f,
        reqwest::Method::POST,
        &q,
        Some(json!({"filter": wrong_type})),
    )
    .await;
    assert_eq!(s, 400);
    let mut seen = 0;
    let mut cursor: Option<String> = None;
    loop {
        let mut body = json!({"page_size": 10, "sorts": [{"timestamp": "created_time", "direction": "descending"}]});
        if let Some(c) = &cursor {
            body["start_cursor"] = json!(c);
        }
        let (_, b) = call(&f, reqwest::Method::POST, &q, Some(body)).await;
        seen += b["results"].as_array().unwrap().len();
        if seen == 10 {
            assert_eq!(
                b["results"][0]["properties"]["Title"]["title"][0]["plain_text"],
                "t29"
            );
        }
        assert_eq!(
            b["request_status"]["incomplete_reason"],
            "query_result_limit_reached"
        );
        if !b["has_more"].as_bool().unwrap() {
            break;
        }
        cursor = b["next_cursor"].as_str().map(str::to_string);
    }
    assert_eq!(seen, 25);
}

#[tokio::test]
async fn create_validates_values_and_saves_on_committed_503() {
    let f = FakeNotion::start(FakeNotionOptions::default()).await;
    let ds = f.data_source_id();
    let mk = |props: Value| json!({"parent": {"type": "data_source_id", "data_source_id": ds}, "properties": props});
    let (s, b) = call(
        &f,
        reqwest::Method::POST,
        "/v1/pages",
        Some(mk(json!({"Genre": {"select": {"name": "Rock, Pop"}}}))),
    )
    .await;
    assert_eq!((s, b["code"].as_str()), (400, Some("validation_error")));
    let (s, _) = call(
        &f,
        reqwest::Method::POST,
        "/v1/pages",
        Some(mk(json!({"SoundCloud URL": {"url": ""}}))),
    )
    .await;
    assert_eq!(s, 400);
    let long = "x".repeat(2001);
    let (s, _) = call(
        &f,
        reqwest::Method::POST,
        "/v1/pages",
        Some(mk(
            json!({"Title": {"title": [{"text": {"content": long}}]}}),
        )),
    )
    .await;
    assert_eq!(s, 400);
    let (s, _) = call(
        &f,
        reqwest::Method::POST,
        "/v1/pages",
        Some(mk(
            json!({"Playlists": {"relation": [{"id": "00000000000040008000000000000000"}]}}),
        )),
    )
    .await;
    assert_eq!(s, 404);
    assert_eq!(f.pages().len(), 0);
    f.inject(Endpoint::Create, Fault::SavedButUnavailable, 1);
    let (s, b) = call(
        &f,
        reqwest::Method::POST,
        "/v1/pages",
        Some(mk(json!({"Genre": {"select": {"name": "House"}}}))),
    )
    .await;
    assert_eq!(s, 503);
    let id = b["additional_data"]["committed_resource_id"]
        .as_str()
        .unwrap();
    assert_eq!(
        f.page(id).unwrap().select("Genre").as_deref(),
        Some("House")
    );
    assert_eq!(f.select_options("Genre"), vec!["House".to_string()]);
}

#[tokio::test]
async fn relations_take_100_a_write_and_page_with_cursors_that_need_encoding() {
    let f = FakeNotion::start(FakeNotionOptions::default()).await;
    let pls = f.playlists_data_source_id();
    let ids: Vec<String> = (0..130)
        .map(|i| {
            f.seed_page_in(
                &pls,
                json!({"Name": {"title": [{"text": {"content": format!("P{i}")}}]}}),
            )
        })
        .collect();
    let page = f.seed_track("t", "a", "https://soundcloud.com/a/t");
    f.seed_relation(&page, "Playlists", &ids);
    // A write of 101 is Notion's validation error, and changes nothing.
    let rel: Vec<Value> = ids[..101].iter().map(|id| json!({"id": id})).collect();
    let (s, b) = call(
        &f,
        reqwest::Method::PATCH,
        &format!("/v1/pages/{page}"),
        Some(json!({"properties": {"Playlists": {"relation": rel}}})),
    )
    .await;
    assert_eq!((s, b["code"].as_str()), (400, Some("validation_error")));
    assert!(b["message"].as_str().unwrap().contains("should be ≤ `100`"));
    assert_eq!(f.page(&page).unwrap().relation("Playlists").len(), 130);
    // The page object carries 25; the property endpoint pages through all of them.
    let (_, b) = call(&f, reqwest::Method::GET, &format!("/v1/pages/{page}"), None).await;
    let prop = &b["properties"]["Playlists"];
    assert_eq!(prop["relation"].as_array().unwrap().len(), 25);
    assert_eq!(prop["has_more"], true);
    let pid = prop["id"].as_str().unwrap();
    let base = format!("/v1/pages/{page}/properties/{pid}?page_size=100");
    let (_, b) = call(&f, reqwest::Method::GET, &base, None).await;
    assert_eq!(b["results"].as_array().unwrap().len(), 100);
    let cursor = b["next_cursor"].as_str().unwrap().to_string();
    assert!(
        cursor.contains('+') && cursor.contains('/') && cursor.contains('='),
        "{cursor}"
    );
    // Pasted raw, the `+` reads as a space, as on a real server.
    let (s, _) = call(
        &f,
        reqwest::Method::GET,
        &format!("{base}&start_cursor={cursor}"),
        None,
    )
    .await;
    assert_eq!(s, 400);
    let encoded: String = url::form_urlencoded::byte_serialize(cursor.as_bytes()).collect();
    let (s, b) = call(
        &f,
        reqwest::Method::GET,
        &format!("{base}&start_cursor={encoded}"),
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(b["results"].as_array().unwrap().len(), 30);
    assert_eq!(b["has_more"], false);
}

#[tokio::test]
async fn a_lagging_index_hides_fresh_pages_from_query_only() {
    let f = FakeNotion::start(FakeNotionOptions::default()).await;
    let ds = f.data_source_id();
    let seeded = f.seed_track("old", "a", "https://soundcloud.com/a/old");
    // Long enough never to pass during the test: nothing here waits for it.
    f.set_index_lag(Duration::from_secs(600));
    let body = json!({"parent": {"type": "data_source_id", "data_source_id": ds}, "properties": {"Title": {"title": [{"text": {"content": "new"}}]}}});
    let (s, b) = call(&f, reqwest::Method::POST, "/v1/pages", Some(body)).await;
    assert_eq!(s, 200);
    let fresh = b["id"].as_str().unwrap().to_string();
    let q = format!("/v1/data_sources/{ds}/query");
    let (_, b) = call(&f, reqwest::Method::POST, &q, Some(json!({}))).await;
    let found: Vec<&str> = b["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        found,
        vec![seeded.as_str()],
        "the fresh page is not indexed yet"
    );
    let (s, _) = call(
        &f,
        reqwest::Method::GET,
        &format!("/v1/pages/{fresh}"),
        None,
    )
    .await;
    assert_eq!(s, 200, "but it can be read by id");
    assert_eq!(f.pages().len(), 2);
}

#[tokio::test]
async fn connection_reset_is_a_transport_error() {
    let f = FakeNotion::start(FakeNotionOptions::default()).await;
    f.inject(Endpoint::UsersMe, Fault::ResetBefore, 1);
    let client = reqwest::Client::new();
    let r = client
        .get(format!("{}/v1/users/me", f.api_base()))
        .bearer_auth(f.token())
        .header("Notion-Version", "2025-09-03")
        .send()
        .await;
    assert!(r.is_err(), "{r:?}");
    let (s, b) = call(&f, reqwest::Method::GET, "/v1/users/me", None).await;
    assert_eq!(s, 200);
    assert_eq!(b["bot"]["workspace_name"], "Fake Workspace");
    assert_eq!(
        f.requests().iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![0, 200]
    );
}
