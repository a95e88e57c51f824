FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
# The project itself (its entry points register the built-in algorithms), in place.
RUN pip install --no-cache-dir --no-deps --no-build-isolation -e . --config-settings editable_mode=compat
# The example plugin (docs/custom-algorithms.md): RandomChannelPruner and PowerOfTwoQuantizer.
RUN pip install --no-cache-dir --no-deps --no-build-isolation -e examples/condense-example-plugin
# A throwaway key for this one command: without it settings would write a secret key into the image.
RUN DJANGO_SECRET_KEY=collectstatic-only-not-a-secret python manage.py collectstatic --noinput -v 0
EXPOSE 8000
CMD ["gunicorn", "webapp.wsgi", "-b", "0.0.0.0:8000", "--workers", "3", "--timeout", "600"]
