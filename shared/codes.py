"""Error codes of the wire contract and the one-sentence message each stands for.

9001-9033 are OPS-COM's published codes; their numeric order is also their precedence
when several attributes fail. 99xx are permit-push's own, for faults that are not about
the request's content (no OPS-COM code covers them).
"""

TOKEN_MISSING = 9001
TOKEN_NOT_PERMITTED = 9002
NOT_PARSEABLE = 9003
END_TIME_REQUIRED = 9004
END_TIME_INVALID = 9005
PLATE_REQUIRED = 9006
START_TIME_INVALID = 9007
REFERENCE_REQUIRED = 9008
RECORD_NOT_FOUND = 9009
RECORD_EXISTS = 9022
TOO_LONG = 9030
REQUIRED = 9031
TOO_SHORT = 9032
INVALID = 9033
RATE_LIMITED = 9900
UNAVAILABLE = 9901
INTERNAL = 9902

MESSAGES = {
    TOKEN_MISSING: "The API token is missing.",
    TOKEN_NOT_PERMITTED: "The API token is not permitted.",
    NOT_PARSEABLE: "The request could not be parsed.",
    END_TIME_REQUIRED: "The end time is required.",
    END_TIME_INVALID: "The end time is invalid.",
    PLATE_REQUIRED: "The licence plate is required.",
    START_TIME_INVALID: "The start time is invalid.",
    REFERENCE_REQUIRED: "The reference id is required.",
    RECORD_NOT_FOUND: "No record was found for that reference id.",
    RECORD_EXISTS: "A record already exists with the supplied details.",
    TOO_LONG: "A field is too long.",
    REQUIRED: "A required field is missing.",
    TOO_SHORT: "A field is too short.",
    INVALID: "A field's value is invalid.",
    RATE_LIMITED: "Too many requests; retry later.",
    UNAVAILABLE: "The service cannot take permits right now; retry later.",
    INTERNAL: "The service failed to handle the request.",
}
