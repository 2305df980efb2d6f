//! The console's catalog pages (`/ui/#/traits`, `#/segments`, `#/destinations`) in a real
//! browser: a rule error is shown and underlined where the API says, a fixed trait is saved,
//! a segment is written with the trait finder, a destination maps it, and deleting the trait
//! is refused with the reason in plain words.

use std::time::Duration;

use serde_json::{json, Value};
use tributary::core::catalog::Catalog;

use crate::common::browser::{Browser, Options};
use crate::common::console::{click, fill, submit};
use crate::common::*;

const WAIT: Duration = Duration::from_secs(15);

/// Goes to a console section and waits for `ready` (a selector) to be on the page.
async fn go(browser: &Browser, hash: &str, ready: &str) {
    browser
        .script(
            "location.hash = arguments[0]; return true;",
            vec![json!(hash)],
        )
        .await;
    wait_for_element(browser, ready).await;
}

async fn wait_for_element(browser: &Browser, ready: &str) {
    browser
        .wait_script(
            ready,
            WAIT,
            &format!("return document.querySelector({}) !== null;", json!(ready)),
        )
        .await;
}

/// Waits for a saved form to have brought the browser back to its list.
async fn wait_for_list(browser: &Browser, hash: &str, table: &str) {
    browser
        .wait_script(
            "the list after saving",
            WAIT,
            &format!(
                "return location.hash === {} && document.querySelector({}) !== null;",
                json!(hash),
                json!(table)
            ),
        )
        .await;
}

async fn find_by_name(admin: &Admin, path: &str, name: &str) -> Value {
    let all = admin.call("GET", path, None).await.json();
    all.as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no {name:?} in {all}"))
}

#[actix_rt::test]
async fn console_b_traits_segments_and_destinations_in_a_browser() {
    let Some(browser) = Browser::start(Options::default()).await else {
        return;
    };
    let server = TestServer::start(&Catalog::default()).await;
    let admin = Admin::of(&server);

    browser.open(&format!("{}/ui/", admin.base)).await;
    browser
        .wait_script(
            "the sign-in form",
            WAIT,
            "return !document.getElementById('sign-in').hidden;",
        )
        .await;
    // Anything the page's policy blocks (an inline style, a handler) would show up here.
    browser
        .script(
            "window.violations = [];
             document.addEventListener('securitypolicyviolation',
                 (e) => window.violations.push(e.violatedDirective + ' ' + e.blockedURI));
             return true;",
            vec![],
        )
        .await;
    // The listener itself works: a style attribute is what the policy refuses.
    browser
        .script(
            "document.body.append(Object.assign(document.createElement('i'), {id: 'probe'}));
             document.getElementById('probe').setAttribute('style', 'color: red');
             return true;",
            vec![],
        )
        .await;
    browser
        .wait_script(
            "the probe's violation",
            WAIT,
            "if (!window.violations.length) return null;
             window.violations = [];
             document.getElementById('probe').remove();
             return true;",
        )
        .await;
    fill(&browser, "#token", ADMIN_TOKEN).await;
    submit(&browser, "#sign-in").await;
    browser
        .wait_script(
            "signed in",
            WAIT,
            "return !document.getElementById('nav').hidden;",
        )
        .await;

    // A rule with an error after a non-ASCII character: the API's offset counts bytes, and
    // the underline must still fall on the right characters.
    go(&browser, "#/traits/new", "#trait-form").await;
    let bad = r#"c_page == "voitures é" AND == 1"#;
    let answer = admin
        .call("POST", "/v1/traits/validate", Some(json!({"code": bad})))
        .await;
    assert_eq!(answer.status, 400);
    let error = answer.json()["error"].clone();
    let offset = error["offset"].as_u64().expect("an offset") as usize;
    fill(&browser, "#trait-form [name=traitRule]", bad).await;
    let shown = browser
        .wait_script(
            "the rule error underlined",
            WAIT,
            "const e = document.querySelector('#trait-form .rule-error');
             const alert = document.querySelector('#trait-form [role=alert].rule-message');
             if (!e || !alert.textContent) return null;
             const ta = document.querySelector('#trait-form [name=traitRule]');
             return {offset: Number(e.dataset.offset), bad: e.textContent,
                     before: document.querySelector('#trait-form .rule-before').textContent,
                     message: alert.textContent,
                     describedBy: ta.getAttribute('aria-describedby') === alert.id,
                     invalid: ta.getAttribute('aria-invalid')};",
        )
        .await;
    assert_eq!(shown["offset"], json!(offset), "{shown}");
    assert_eq!(shown["before"], json!(&bad[..offset]), "{shown}");
    let word = bad[offset..].split_whitespace().next().unwrap_or("");
    assert_eq!(shown["bad"], json!(word), "{shown}");
    assert!(
        shown["message"]
            .as_str()
            .unwrap()
            .contains(error["message"].as_str().unwrap()),
        "{shown} vs {error}"
    );
    assert_eq!(shown["describedBy"], json!(true), "{shown}");
    assert_eq!(shown["invalid"], json!("true"), "{shown}");

    // An error at the very end of the rule: the underline stands for the missing part.
    let unfinished = r#"c_page == "cars" AND"#;
    fill(&browser, "#trait-form [name=traitRule]", unfinished).await;
    let end = browser
        .wait_script(
            "the end-of-rule error",
            WAIT,
            &format!(
                "const e = document.querySelector('#trait-form .rule-error');
                 return e && e.dataset.offset !== '{offset}' ? Number(e.dataset.offset) : null;"
            ),
        )
        .await;
    let api_end = admin
        .call(
            "POST",
            "/v1/traits/validate",
            Some(json!({"code": unfinished})),
        )
        .await
        .json()["error"]["offset"]
        .clone();
    assert_eq!(end, api_end);

    // Fixed: the error goes, the trait is saved and listed.
    fill(
        &browser,
        "#trait-form [name=traitRule]",
        r#"c_page == "voitures é""#,
    )
    .await;
    browser
        .wait_script(
            "the rule accepted",
            WAIT,
            "return document.querySelector('#trait-form .rule-state').textContent === 'Rule is valid.'
                 && document.querySelector('#trait-form .rule-mirror').hidden
                 && !document.querySelector('#trait-form .rule-message').textContent;",
        )
        .await;
    fill(&browser, "#trait-form [name=name]", "Voitures").await;
    fill(&browser, "#trait-form [name=dataSourceId]", "1").await;
    submit(&browser, "#trait-form").await;
    wait_for_list(&browser, "#/traits", "#traits-table").await;
    let tr = find_by_name(&admin, "/v1/traits", "Voitures").await;
    assert_eq!(tr["traitRule"], r#"c_page == "voitures é""#);
    let sid = tr["sid"].as_u64().unwrap();
    browser
        .wait_script(
            "the trait in the list",
            WAIT,
            &format!("const r = document.querySelector('#traits-table tr[data-sid=\"{sid}\"]'); return r && r.textContent.includes('Voitures');"),
        )
        .await;

    // A segment written with the trait finder.
    go(&browser, "#/segments/new", "#segment-form").await;
    fill(&browser, "#segment-form [name=name]", "Car fans").await;
    fill(&browser, "#segment-form [name=dataSourceId]", "1").await;
    fill(&browser, "#segment-form [name=traitSearch]", "voit").await;
    let pick = format!("#segment-form .pick-trait[data-sid=\"{sid}\"]");
    wait_for_element(&browser, &pick).await;
    click(&browser, &pick).await;
    let rule = browser
        .script(
            "return document.querySelector('#segment-form [name=segmentRule]').value;",
            vec![],
        )
        .await;
    assert_eq!(rule, json!(format!("{sid}T")));
    // In the middle of a rule, at the cursor, kept apart from the word before it.
    let mid = browser
        .script(
            "const ta = document.querySelector('#segment-form [name=segmentRule]');
             ta.value = 'NOT OR ' + ta.value;
             ta.setSelectionRange(3, 3);
             document.querySelector(arguments[0]).click();
             const v = ta.value;
             ta.value = v.split(' ').pop();
             return v;",
            vec![json!(pick)],
        )
        .await;
    assert_eq!(mid, json!(format!("NOT {sid}T OR {sid}T")));
    browser
        .wait_script(
            "the segment rule accepted",
            WAIT,
            "return document.querySelector('#segment-form .rule-state').textContent === 'Rule is valid.';",
        )
        .await;
    submit(&browser, "#segment-form").await;
    browser
        .wait_script(
            "the segment list",
            WAIT,
            "return location.hash === '#/segments' && document.querySelector('#segments-table') !== null;",
        )
        .await;
    let seg = find_by_name(&admin, "/v1/segments", "Car fans").await;
    assert_eq!(seg["segmentRule"], json!(format!("{sid}T")));
    let seg_id = seg["sid"].as_u64().unwrap();

    // A cookie destination mapping that segment.
    go(&browser, "#/destinations/new", "#destination-form").await;
    fill(&browser, "#destination-form [name=name]", "Ad server").await;
    fill(&browser, "#destination-form [name=destinationType]", "ADS").await;
    fill(&browser, "#destination-form [name=cookieName]", "segs").await;
    click(&browser, "#add-mapping").await;
    fill(
        &browser,
        "#destination-form tr.mapping [name=mapSid]",
        &seg_id.to_string(),
    )
    .await;
    fill(
        &browser,
        "#destination-form tr.mapping [name=mapAlias]",
        "cars",
    )
    .await;
    submit(&browser, "#destination-form").await;
    browser
        .wait_script(
            "the destination list",
            WAIT,
            "const t = document.querySelector('#destinations-table');
             return location.hash === '#/destinations' && t && t.textContent.includes('Ad server');",
        )
        .await;
    let dest = find_by_name(&admin, "/v1/destinations", "Ad server").await;
    assert_eq!(dest["destinationType"], "ADS");
    assert_eq!(dest["cookieName"], "segs");
    assert_eq!(
        dest["mappings"],
        json!([{"sid": seg_id, "traitAlias": "cars", "valueAlias": ""}])
    );

    // Deleting the trait the segment uses: asked first, then refused and explained.
    go(
        &browser,
        "#/traits",
        &format!("#traits-table tr[data-sid=\"{sid}\"]"),
    )
    .await;
    let used_by = browser
        .script(
            &format!("return document.querySelector('#traits-table tr[data-sid=\"{sid}\"] .used-by a')?.getAttribute('href');"),
            vec![],
        )
        .await;
    assert_eq!(used_by, json!(format!("#/segments/{seg_id}")));
    click(
        &browser,
        &format!("#traits-table tr[data-sid=\"{sid}\"] button.danger"),
    )
    .await;
    click(
        &browser,
        &format!("#traits-table tr[data-sid=\"{sid}\"] button.confirm-delete"),
    )
    .await;
    let why = browser
        .wait_script(
            "the refusal explained",
            WAIT,
            "const p = document.querySelector('.delete-error[role=alert]'); return p && p.textContent;",
        )
        .await;
    let why = why.as_str().unwrap();
    assert!(
        why.contains(&format!(
            "Trait {sid} was not deleted because segment {seg_id} (Car fans) uses it"
        )) && why.contains(&format!("Remove {sid}T")),
        "{why}"
    );
    assert_eq!(
        admin
            .call("GET", &format!("/v1/traits/{sid}"), None)
            .await
            .status,
        200
    );

    // The segment is mapped, so it cannot go either, and the page says by what.
    go(
        &browser,
        "#/segments",
        &format!("#segments-table tr[data-sid=\"{seg_id}\"]"),
    )
    .await;
    click(
        &browser,
        &format!("#segments-table tr[data-sid=\"{seg_id}\"] button.danger"),
    )
    .await;
    click(
        &browser,
        &format!("#segments-table tr[data-sid=\"{seg_id}\"] button.confirm-delete"),
    )
    .await;
    let why = browser
        .wait_script(
            "the segment's refusal explained",
            WAIT,
            "const p = document.querySelector('.delete-error[role=alert]'); return p && p.textContent;",
        )
        .await;
    let dest_id = dest["destinationId"].as_u64().unwrap();
    assert!(
        why.as_str()
            .unwrap()
            .contains(&format!("destination {dest_id} (Ad server) maps it")),
        "{why}"
    );

    // Paging: 20 a page by default, so 20 more traits make a second page.
    for i in 0..20 {
        let made = admin
            .call(
                "POST",
                "/v1/traits",
                Some(
                    json!({"name": format!("filler {i}"), "traitType": "RULE_BASED_TRAIT",
                            "traitRule": "c_page == x", "dataSourceId": 1}),
                ),
            )
            .await;
        assert_eq!(made.status, 201);
    }
    go(&browser, "#/segments", "#segments-table").await;
    go(&browser, "#/traits", "#traits-table").await;
    browser
        .wait_script(
            "two pages",
            WAIT,
            "return document.querySelector('.pager')?.textContent.includes('Page 1 of 2 (21 in all)');",
        )
        .await;
    click(&browser, ".pager button:last-of-type").await;
    browser
        .wait_script(
            "the second page",
            WAIT,
            "return document.querySelector('.pager')?.textContent.includes('Page 2 of 2')
                && document.querySelectorAll('#traits-table tbody tr').length === 1;",
        )
        .await;

    // Search looks through all traits, by name or id.
    fill(&browser, "#page [name=q]", "zzz").await;
    browser
        .wait_script(
            "no match",
            WAIT,
            "return document.querySelector('#traits-table') === null && document.body.textContent.includes('No trait matches.');",
        )
        .await;
    fill(&browser, "#page [name=q]", &sid.to_string()).await;
    wait_for_element(&browser, &format!("#traits-table tr[data-sid=\"{sid}\"]")).await;

    // Editing keeps what is not on the form and replaces the rest.
    go(&browser, &format!("#/traits/{sid}"), "#trait-form").await;
    let name = browser
        .script(
            "return document.querySelector('#trait-form [name=name]').value;",
            vec![],
        )
        .await;
    assert_eq!(name, "Voitures");
    fill(&browser, "#trait-form [name=description]", "French cars").await;
    submit(&browser, "#trait-form").await;
    wait_for_list(&browser, "#/traits", "#traits-table").await;
    let edited = admin
        .call("GET", &format!("/v1/traits/{sid}"), None)
        .await
        .json();
    assert_eq!(edited["description"], "French cars");
    assert_eq!(edited["traitRule"], tr["traitRule"]);

    // An S2S destination: its own fields, a secret never shown back and kept on an edit, and
    // the outbox's counters in the list.
    go(&browser, "#/destinations/new", "#destination-form").await;
    fill(&browser, "#destination-form [name=name]", "Warehouse").await;
    fill(&browser, "#destination-form [name=destinationType]", "S2S").await;
    let shown = browser
        .script(
            "return [...document.querySelectorAll('#destination-form fieldset.type-fields')]
                 .filter((f) => !f.hidden).map((f) => f.dataset.type);",
            vec![],
        )
        .await;
    assert_eq!(shown, json!(["S2S"]));
    fill(
        &browser,
        "#destination-form [name=url]",
        "http://127.0.0.1:9/hook",
    )
    .await;
    fill(
        &browser,
        "#destination-form [name=secret]",
        "a-signing-secret",
    )
    .await;
    click(&browser, "#add-mapping").await;
    fill(
        &browser,
        "#destination-form tr.mapping [name=mapSid]",
        &seg_id.to_string(),
    )
    .await;
    submit(&browser, "#destination-form").await;
    browser
        .wait_script(
            "the S2S destination listed with its outbox",
            WAIT,
            "const t = document.querySelector('#destinations-table');
             return location.hash === '#/destinations' && t && t.textContent.includes('Warehouse')
                 && t.querySelector('.outbox') !== null;",
        )
        .await;
    let s2s = find_by_name(&admin, "/v1/destinations", "Warehouse").await;
    assert_eq!(s2s["secret"], "********");
    assert_eq!(s2s["url"], "http://127.0.0.1:9/hook");
    let s2s_id = s2s["destinationId"].as_u64().unwrap();
    go(
        &browser,
        &format!("#/destinations/{s2s_id}"),
        "#destination-form",
    )
    .await;
    fill(&browser, "#destination-form [name=batchSize]", "50").await;
    submit(&browser, "#destination-form").await;
    wait_for_list(&browser, "#/destinations", "#destinations-table").await;
    let s2s = admin
        .call("GET", &format!("/v1/destinations/{s2s_id}"), None)
        .await
        .json();
    assert_eq!(s2s["batchSize"], 50);
    assert_eq!(s2s["secret"], "********", "the secret kept: {s2s}");

    // A visitor entering the segment makes the outbox call the endpoint, where nothing
    // listens: the list's counters, refreshed while it is shown, show the failure.
    let event = get(&server.url("/event?d_rtbd=json&c_page=voitures%20%C3%A9")).await;
    assert_eq!(event.status, 200);
    let counters = browser
        .wait_script(
            "the failed S2S request counted",
            Duration::from_secs(30),
            &format!(
                "const o = document.querySelector('#destinations-table .outbox[data-id=\"{s2s_id}\"]');
                 return o && /[1-9][0-9]* failed/.test(o.textContent) ? o.textContent : null;"
            ),
        )
        .await;
    // Not "0 ok": the metrics recorder is the process's, shared with the other tests, which
    // may have a destination of the same id.
    assert!(
        counters.as_str().unwrap().starts_with("Requests: "),
        "{counters}"
    );
    // This destination's own status: its last error, from the delivery task itself.
    let last_error = browser
        .wait_script(
            "the destination's last error",
            Duration::from_secs(30),
            &format!(
                "const e = document.querySelector('#destinations-table .outbox[data-id=\"{s2s_id}\"] .outbox-error');
                 return e ? e.textContent : null;"
            ),
        )
        .await;
    assert!(
        last_error.as_str().unwrap().starts_with("Last error, "),
        "{last_error}"
    );

    let violations = browser.script("return window.violations;", vec![]).await;
    assert_eq!(violations, json!([]));

    browser.close().await;
    server.stop().await;
}
