//! A server span's name and `http.route`: the path's route template, so that a name never holds an id. The two
//! inference routes most requests take are named from static strings, without building either.

use std::borrow::Cow;

/// The routes most requests take, with their POST span names: named without building either.
const HOT_ROUTES: [(&str, &str); 2] = [
    ("/v2/models/{model}/infer", "POST /v2/models/{model}/infer"),
    (
        "/v2/models/{model}/versions/{version}/infer",
        "POST /v2/models/{model}/versions/{version}/infer",
    ),
];

/// A server span's route template and name (`{method} {route}`).
pub(super) fn route_and_name(method: &str, path: &str) -> (Cow<'static, str>, Cow<'static, str>) {
    if let Some((route, name)) = hot_route(path).filter(|_| method == "POST") {
        return (Cow::Borrowed(route), Cow::Borrowed(name));
    }
    let route = route_template(path);
    let name = format!("{method} {route}");
    (Cow::Owned(route), Cow::Owned(name))
}

/// The [`HOT_ROUTES`] entry of a path, when its template is one of them: `/v2/models/{model}/infer` or
/// `/v2/models/{model}/versions/{version}/infer`, where neither id is `models` or `versions` (which would template
/// the segment after them).
fn hot_route(path: &str) -> Option<&'static (&'static str, &'static str)> {
    let plain = |segment: &str| !matches!(segment, "models" | "versions");
    let (model, rest) = path.strip_prefix("/v2/models/")?.split_once('/')?;
    if !plain(model) {
        return None;
    }
    if rest == "infer" {
        return Some(&HOT_ROUTES[0]);
    }
    let (version, rest) = rest.strip_prefix("versions/")?.split_once('/')?;
    (plain(version) && rest == "infer").then_some(&HOT_ROUTES[1])
}

/// The route template of a path: the segments after `models` and `versions` become `{model}` and `{version}`, so
/// a span's name never holds an id.
fn route_template(path: &str) -> String {
    let mut route = String::with_capacity(path.len());
    let mut previous = "";
    for segment in path.split('/').skip(1) {
        route.push('/');
        match previous {
            "models" => route.push_str("{model}"),
            "versions" => route.push_str("{version}"),
            _ => route.push_str(segment),
        }
        previous = segment;
    }
    if route.is_empty() {
        route.push('/');
    }
    route
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The routes named without building them are named as the general template names them, and only those.
    #[test]
    fn hot_routes_are_named_as_their_templates() {
        for path in [
            "/v2/models/iris/infer",
            "/v2/models/iris/versions/3/infer",
            "/v2/models/versions/infer",
            "/v2/models/models/versions/infer",
            "/v2/models/iris/infer/",
            "/v2/models/iris",
            "/v2/models//infer",
            "/v2/models/iris/versions//infer",
            "/v2/models/iris/versions/models/infer",
            "/v2/models/iris/versions/3/infer/x",
            "/v2/models/iris/versions/3",
            "/v1/models/iris/infer",
            "/",
        ] {
            for method in ["POST", "GET"] {
                let (route, name) = route_and_name(method, path);
                assert_eq!(route, route_template(path), "{method} {path}");
                assert_eq!(name, format!("{method} {route}"), "{method} {path}");
                let hot = HOT_ROUTES.iter().any(|(r, _)| *r == route);
                assert_eq!(
                    matches!(route, Cow::Borrowed(_)),
                    hot && method == "POST",
                    "{method} {path}"
                );
            }
        }
    }

    #[test]
    fn routes_hold_no_ids() {
        assert_eq!(
            route_template("/v2/models/iris/versions/3/infer"),
            "/v2/models/{model}/versions/{version}/infer"
        );
        assert_eq!(route_template("/v2/models/iris"), "/v2/models/{model}");
        assert_eq!(route_template("/v2/health/ready"), "/v2/health/ready");
        assert_eq!(
            route_template("/v2/repository/models/iris/load"),
            "/v2/repository/models/{model}/load"
        );
        assert_eq!(route_template("/"), "/");
    }
}
