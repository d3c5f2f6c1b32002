"""Creates a bucket on an S3-compatible server, optionally with Object Lock
in compliance mode and a default retention, and can try to overwrite or
delete an object there (for the archive tests).

    s3-bucket.py ENDPOINT create NAME [DAYS]
    s3-bucket.py ENDPOINT overwrite NAME KEY     put other bytes over KEY (plain put, no condition)
    s3-bucket.py ENDPOINT put-if-absent NAME KEY put other bytes as KEY with If-None-Match: *
    s3-bucket.py ENDPOINT delete-version NAME KEY delete KEY's current version by its id
    s3-bucket.py ENDPOINT delete NAME KEY        delete KEY (no version: a delete marker if versioned)
    s3-bucket.py ENDPOINT retention NAME KEY     print KEY's Object Lock mode and retain-until date

Prints what the server answered: `ok`, or `refused CODE`.
"""

import sys

import boto3
from botocore.exceptions import ClientError


def client(endpoint):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="lifeledger-test",
        aws_secret_access_key="lifeledger-test",
        region_name="us-east-1",
    )


def main(argv):
    endpoint, action, bucket = argv[1], argv[2], argv[3]
    s3 = client(endpoint)
    try:
        if action == "create":
            days = int(argv[4]) if len(argv) > 4 else 0
            s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=days > 0)
            if days > 0:
                s3.put_object_lock_configuration(
                    Bucket=bucket,
                    ObjectLockConfiguration={
                        "ObjectLockEnabled": "Enabled",
                        "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": days}},
                    },
                )
        elif action == "overwrite":
            s3.put_object(Bucket=bucket, Key=argv[4], Body=b"overwritten")
        elif action == "put-if-absent":
            s3.put_object(Bucket=bucket, Key=argv[4], Body=b"overwritten", IfNoneMatch="*")
        elif action == "delete-version":
            version = s3.head_object(Bucket=bucket, Key=argv[4])["VersionId"]
            s3.delete_object(Bucket=bucket, Key=argv[4], VersionId=version)
        elif action == "delete":
            s3.delete_object(Bucket=bucket, Key=argv[4])
        elif action == "retention":
            head = s3.head_object(Bucket=bucket, Key=argv[4])
            until = head.get("ObjectLockRetainUntilDate")
            print(head.get("ObjectLockMode"), until.strftime("%Y-%m-%dT%H:%M:%SZ") if until else None)
            return 0
        else:
            print(f"unknown action {action}", file=sys.stderr)
            return 2
    except ClientError as e:
        print(f"refused {e.response['Error']['Code']}")
        return 0
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
