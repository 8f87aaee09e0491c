"""ocean.storage.s3_failure / describe_failure: what an S3 error means, from the SDK's error name in pyarrow's
text (the texts below are what pyarrow 25 raised against SeaweedFS 4.48, ray_stack.md §3.5)."""

from __future__ import annotations

from ocean.storage import describe_failure, s3_failure

DENIED = [
    "When getting information for bucket 'b': AWS Error ACCESS_DENIED during HeadBucket operation: No response body.",
    "When listing objects under key 'x/' in bucket 'b': AWS Error SIGNATURE_DOES_NOT_MATCH during ListObjectsV2 "
    "operation: The request signature we calculated does not match the signature you provided.",
    "When initiating multiple part upload for key 'x/p' in bucket 'b': AWS Error INVALID_ACCESS_KEY_ID during "
    "CreateMultipartUpload operation: The access key ID you provided does not exist in our records.",
]
UNREACHABLE = [
    "When getting information for bucket 'b': AWS Error NETWORK_CONNECTION during HeadBucket operation: curlCode: 7, "
    "Could not connect to server",
    "When reading information for key 'k' in bucket 'b': AWS Error NETWORK_CONNECTION during HeadObject operation: "
    "curlCode: 28, Timeout was reached",
    "When uploading part for key 'k' in bucket 'b': AWS Error NETWORK_CONNECTION during UploadPart operation: "
    "curlCode: 52, Server returned nothing (no headers, no data)",
]


def test_access_denied_unreachable_and_missing_bucket_are_told_apart():
    for text in DENIED:
        assert s3_failure(OSError(text)) == "access denied"
        line = describe_failure(OSError(text))
        assert line.startswith("S3 access denied: the endpoint refused these credentials (AWS_ACCESS_KEY_ID")
        assert "unreachable" not in line
    for text in UNREACHABLE:
        assert s3_failure(OSError(text)) == "endpoint unreachable"
        assert describe_failure(OSError(text)).startswith("S3 endpoint unreachable: When ")
    missing = OSError("AWS Error NO_SUCH_BUCKET during PutObject operation: The specified bucket does not exist")
    assert s3_failure(missing) == "no such bucket"
    assert describe_failure(missing).startswith("S3 bucket does not exist: ")
    other = OSError("disk full\nsecond line")
    assert s3_failure(other) == "error" and describe_failure(other) == "disk full"
