// Swagger UI for /ui/docs, from the assets the service ships (no CDN).
window.addEventListener("load", function () {
  var root = document.getElementById("swagger-ui");
  window.SwaggerUIBundle({
    url: root.getAttribute("data-openapi"),
    dom_id: "#swagger-ui",
    deepLinking: true,
    persistAuthorization: false
  });
});
