/* test_cuda_ops' cases for the ResNet ops and a ResNet CLIP (cuda_resnet_cases.c) */
#ifndef TC_TEST_CUDA_RESNET_CASES_H
#define TC_TEST_CUDA_RESNET_CASES_H

void test_conv2d(void **state);
void test_batchnorm(void **state);
void test_relu_avgpool(void **state);
void test_attnpool(void **state);
void test_resnet_model(void **state);

#endif
