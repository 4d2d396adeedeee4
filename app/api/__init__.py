"""The HTTP side: routes (ours and LibreTranslate's), request and response schemas, the OpenAPI document."""
