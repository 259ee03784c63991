#include "healthai_client.h"

#include <fstream>
#include <sstream>

namespace healthai {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::invalid_argument("cannot read file '" + path + "'");
  std::ostringstream data;
  data << in.rdbuf();
  return data.str();
}

const char* StatusName(grpc::StatusCode code) {
  static const char* const kNames[] = {
      "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
      "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
      "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"};
  int i = static_cast<int>(code);
  return i >= 0 && i < static_cast<int>(sizeof kNames / sizeof kNames[0]) ? kNames[i] : "UNKNOWN";
}

RpcError::RpcError(const std::string& method, const grpc::Status& status)
    : std::runtime_error(method + " failed: " + StatusName(status.error_code()) + ": " +
                         status.error_message()),
      code_(status.error_code()) {}

static std::shared_ptr<grpc::ChannelCredentials> Credentials(const ConnectionOptions& o) {
  if (!o.tls && o.root_cert.empty() && o.client_cert.empty()) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions ssl;
  if (!o.root_cert.empty()) ssl.pem_root_certs = ReadFile(o.root_cert);
  if (!o.client_cert.empty()) {
    if (o.client_key.empty()) throw std::invalid_argument("client_cert needs client_key (mutual TLS)");
    ssl.pem_cert_chain = ReadFile(o.client_cert);
    ssl.pem_private_key = ReadFile(o.client_key);
  }
  return grpc::SslCredentials(ssl);
}

Client::Client(const ConnectionOptions& options) : options_(options) {
  if (options.address.empty()) throw std::invalid_argument("address (host:port) is required");
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 * 1024 * 1024);
  args.SetMaxSendMessageSize(64 * 1024 * 1024);
  channel_ = grpc::CreateCustomChannel(options.address, Credentials(options), args);
  ingest_ = v1::Ingest::NewStub(channel_);
  risk_ = v1::Risk::NewStub(channel_);
  forecast_ = v1::Forecast::NewStub(channel_);
}

void Client::Prepare(grpc::ClientContext* context) const {
  context->set_deadline(std::chrono::system_clock::now() + options_.timeout);
  if (!options_.api_key.empty()) context->AddMetadata("authorization", "Bearer " + options_.api_key);
}

v1::IngestResponse Client::IngestFhir(const std::string& json, const std::string& source) const {
  v1::IngestRequest request;
  request.set_source(source);
  request.mutable_fhir()->set_json(json);
  v1::IngestResponse response;
  grpc::ClientContext context;
  Prepare(&context);
  grpc::Status status = ingest_->IngestBatch(&context, request, &response);
  if (!status.ok()) throw RpcError("Ingest.IngestBatch", status);
  return response;
}

v1::ScoreResponse Client::Score(const v1::ScoreRequest& request) const {
  v1::ScoreResponse response;
  grpc::ClientContext context;
  Prepare(&context);
  grpc::Status status = risk_->Score(&context, request, &response);
  if (!status.ok()) throw RpcError("Risk.Score", status);
  return response;
}

v1::ForecastResponse Client::Forecast(const v1::ForecastRequest& request) const {
  v1::ForecastResponse response;
  grpc::ClientContext context;
  Prepare(&context);
  grpc::Status status = forecast_->Forecast(&context, request, &response);
  if (!status.ok()) throw RpcError("Forecast.Forecast", status);
  return response;
}

}  // namespace healthai
