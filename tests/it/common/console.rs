//! Driving the admin console in a browser: fields set as typing sets them, clicks, form
//! submissions and signing in, shared by the console tests.

use serde_json::json;

use super::browser::Browser;

/// Sets a field's value the way typing does: the page listens for `input` and `change`.
pub async fn fill(browser: &Browser, selector: &str, value: &str) {
    let found = browser
        .script(
            "const el = document.querySelector(arguments[0]);
             if (!el) return false;
             el.focus();
             el.value = arguments[1];
             el.dispatchEvent(new Event('input', {bubbles: true}));
             el.dispatchEvent(new Event('change', {bubbles: true}));
             return true;",
            vec![json!(selector), json!(value)],
        )
        .await;
    assert_eq!(found, json!(true), "no field {selector}");
}

pub async fn click(browser: &Browser, selector: &str) {
    let found = browser
        .script(
            "const el = document.querySelector(arguments[0]);
             if (!el) return false;
             el.click();
             return true;",
            vec![json!(selector)],
        )
        .await;
    assert_eq!(found, json!(true), "nothing to click at {selector}");
}

pub async fn submit(browser: &Browser, form: &str) {
    let found = browser
        .script(
            "const f = document.querySelector(arguments[0]);
             if (!f) return false;
             f.requestSubmit();
             return true;",
            vec![json!(form)],
        )
        .await;
    assert_eq!(found, json!(true), "no form {form}");
}

/// Types `token` into the sign-in form and submits it (the page must show the form).
pub async fn sign_in(browser: &Browser, token: &str) {
    fill(browser, "#token", token).await;
    submit(browser, "#sign-in").await;
}
