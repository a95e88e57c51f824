"""ReDoc served with nothing remote: drf-spectacular's template links Google Fonts, and ReDoc's sidebar shows a
logo from cdn.redoc.ly.

The template here drops the fonts (ReDoc falls back to the system's) and a
Content-Security-Policy keeps the browser from fetching the logo: only this
server's scripts, styles and images (ReDoc draws its icons as data: URLs and
runs its search in a blob: worker).
"""

from drf_spectacular.views import SpectacularRedocView

REDOC_CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
             "script-src 'self' 'unsafe-inline'; worker-src 'self' blob:; font-src 'self' data:")


class RedocView(SpectacularRedocView):
    template_name = "api/redoc.html"

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        response["Content-Security-Policy"] = REDOC_CSP
        return response
