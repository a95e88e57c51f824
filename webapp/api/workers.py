"""``GET /api/v1/workers/``: the worker pool, for any signed-in user (workers are shared, jobs are private)."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from webapp.jobs import selectors as job_selectors


# What a worker reports about its machine (compression_core.analysis.worker_report); a worker of another
# version may leave a field out, which the response then omits.
class CpuSerializer(serializers.Serializer):
    model = serializers.CharField(required=False)
    logical_cores = serializers.IntegerField(required=False)
    available_cores = serializers.IntegerField(required=False, help_text="cores the worker process may run on")


class MemorySerializer(serializers.Serializer):
    total_bytes = serializers.IntegerField(required=False)
    available_bytes = serializers.IntegerField(required=False)


class GpuSerializer(serializers.Serializer):
    index = serializers.IntegerField(required=False)
    name = serializers.CharField(required=False)
    memory_bytes = serializers.IntegerField(required=False)
    capability = serializers.CharField(required=False, help_text='CUDA compute capability, e.g. "9.0"')


class VersionsSerializer(serializers.Serializer):
    python = serializers.CharField(required=False)
    torch = serializers.CharField(required=False)
    cuda = serializers.CharField(required=False, allow_null=True,
                                 help_text="the CUDA torch was built with; null: a CPU build")
    onnxruntime = serializers.CharField(required=False, allow_null=True)


class LoadSerializer(serializers.Serializer):
    loadavg_1m = serializers.FloatField(required=False)
    loadavg_5m = serializers.FloatField(required=False)
    cpu_count = serializers.IntegerField(required=False)


class WorkerJobSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    algorithm = serializers.CharField()
    progress = serializers.FloatField(help_text="0 to 1")
    stage = serializers.CharField()


class WorkerSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="Celery node name, e.g. gpu1@host")
    queues = serializers.ListField(child=serializers.CharField())
    live = serializers.BooleanField(help_text="a heartbeat within CONDENSE_WORKER_TIMEOUT_S and not stopped")
    state = serializers.ChoiceField(choices=["live", "stale", "stopped"])
    last_seen_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField()
    stopped_at = serializers.DateTimeField(allow_null=True)
    cpu = CpuSerializer()
    memory = MemorySerializer()
    gpus = GpuSerializer(many=True)
    versions = VersionsSerializer()
    load = LoadSerializer()
    jobs = WorkerJobSerializer(many=True, help_text="your own jobs running on this worker")
    other_jobs = serializers.IntegerField(help_text="other users' jobs running on this worker")


class QueueSerializer(serializers.Serializer):
    name = serializers.CharField()
    broker_length = serializers.IntegerField(allow_null=True,
                                             help_text="messages waiting on the broker; null: broker unreachable")
    queued_jobs = serializers.IntegerField(help_text="jobs of all users waiting for a worker of this queue")


class WorkerPoolSerializer(serializers.Serializer):
    workers = WorkerSerializer(many=True)
    queues = QueueSerializer(many=True)


class WorkerPoolView(APIView):
    @extend_schema(responses=WorkerPoolSerializer, summary="The worker pool: devices, load, running jobs, queues")
    def get(self, request):
        return Response(WorkerPoolSerializer(job_selectors.worker_pool(user=request.user)).data)
